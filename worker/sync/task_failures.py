"""How a sync job ends when its own step does not end it.

A crashed task (an exception outside ``runner.run_step``'s own net), a
payload that does not validate (rejected, recorded, never retried): each
ends its run, or records one that ended at once, with a redacted message.
``is_outage`` tells those apart from an outage of our own Redis or store,
which retries instead.
"""

from __future__ import annotations

import sqlite3
import traceback
import uuid

import psycopg
import redis

from worker.coordination.lease import holder_of
from worker.errors import CoordinationError, Kind, StoreError
from worker.logs import connection_log, log
from worker.redaction import redact
from worker.runtime import Runtime
from worker.store import Run, RunStatus
from worker.timeutil import utc_now

INTERNAL = "internal"  # the error_kind of a run ended by something nobody classified
MAX_MESSAGE_CHARS = 2000
OPEN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.DEFERRED)


# Errors a database raises for what it was given, not for being down: sending
# the same page again gets the same answer, so they end the run, not retry it.
_REFUSALS: tuple[type[BaseException], ...] = (
    sqlite3.DataError,
    sqlite3.IntegrityError,
    psycopg.DataError,
    psycopg.IntegrityError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` is our own Redis or store being unreachable (worth a retry)."""
    if isinstance(exc, CoordinationError | redis.ConnectionError | redis.TimeoutError):
        return True  # the second and third: a Redis call made without a wrapper
    return isinstance(exc, StoreError) and not isinstance(exc.__cause__, _REFUSALS)


def end_crashed_task(
    rt: Runtime,
    fields: dict[str, object],
    task_id: str,
    exc: BaseException,
    *,
    report: bool = True,
) -> None:
    """A sync_entity task met an exception outside its step: end its run if nobody
    else carries it (the queued run a fan-out wrote, or a continuation's).

    The net under ``run_step``'s own: an error before the lease was taken, or
    in the task after the step. ``report`` sends the one ERROR line; leave it
    off where Celery reports the exception itself.

    It takes the runtime, not its parts, on purpose: the store, leases and
    limits are opened here, after the report and only when the job names an
    open run, so a crash whose cause is one of them still gets its ERROR line.
    """
    connection_id, entity_type = fields.get("connection_id"), fields.get("entity_type")
    run_id = run_id_of(fields, task_id)
    message = redact(f"task crashed: {type(exc).__name__}: {exc}", limit=MAX_MESSAGE_CHARS)
    if report:
        report_unexpected(run_id, message, exc)
    if not isinstance(connection_id, str) or not isinstance(entity_type, str):
        return
    run = rt.store.get_run(run_id)
    if run is None or run.status not in OPEN_STATUSES:
        return
    me = holder_of(run_id, task_id)
    holder = rt.leases.holder(connection_id, entity_type)
    if holder not in (None, me):
        return  # another task holds the pair (a later task of this run, or another run)
    try:
        rt.store.finish_run(run_id, RunStatus.FAILED, error_kind=INTERNAL, error_message=message)
    finally:
        rt.leases.release(connection_id, entity_type, me)
        rt.limits.release_slot(connection_id, me)
    connection_log.warning("run failed: %s", message, extra={"kind": INTERNAL, "run_id": run_id})


def report_unexpected(run_id: str, message: str, exc: BaseException) -> None:
    """One ERROR line (and so one Sentry event), traceback included, secrets redacted."""
    trace = redact("".join(traceback.format_exception(exc)), limit=20_000)
    log.error(
        "run ended by an unexpected error: %s",
        message,
        extra={"run_id": run_id, "error_kind": INTERNAL, "trace": trace},
    )


def record_rejection(
    rt: Runtime, task_name: str, payload: object, error: Exception, *, task_id: str
) -> None:
    """Put a rejected job in the run history and the log (never raises).

    It takes the runtime on purpose: the store is opened inside the guard, so a
    store that cannot be opened is logged here, never raised from the task.
    """
    fields = payload if isinstance(payload, dict) else {}
    message = f"{task_name}: {error}"[:2000]
    log.error("job rejected: %s", message, extra={"task_name": task_name})
    try:
        close_or_record(rt, fields, task_id, RunStatus.REJECTED, Kind.BAD_REQUEST.value, message)
    except Exception:
        log.exception("could not record the rejected job in the run history")


def close_or_record(
    rt: Runtime,
    fields: dict[str, object],
    task_id: str,
    status: RunStatus,
    kind: str,
    message: str,
) -> None:
    """End the job's run (a continuation's, or the queued one a fan-out wrote, whose
    id is the task id) with this outcome if it is open; record a run that ended at
    once when the job had none."""
    run_id = run_id_of(fields, task_id)
    if rt.store.get_run(run_id) is not None:
        rt.store.finish_run(run_id, status, error_kind=kind, error_message=message)
        return
    rt.store.record_run(_ended_run(fields, status, kind, message))


def run_id_of(fields: dict[str, object], task_id: str) -> str:
    """A continuation names its run; a run's first task has the run's id."""
    run_id = fields.get("run_id")
    return run_id if isinstance(run_id, str) else task_id


def _ended_run(fields: dict[str, object], status: RunStatus, kind: str, message: str) -> Run:
    """A run that ended before it began (rejected, dead-lettered), for the history."""
    now = utc_now()
    return Run(
        id=str(uuid.uuid4()),
        connection_id=_text(fields.get("connection_id")),
        entity_type=_text(fields.get("entity_type")),
        status=status,
        started_at=now,
        finished_at=now,
        request_id=_text(fields.get("request_id")),
        error_kind=kind,
        error_message=message,
    )


def _text(value: object) -> str | None:
    return value[:128] if isinstance(value, str) else None


def safe_fields(fields: dict[str, object]) -> dict[str, str | None]:
    """The identifying fields of a payload, and nothing else (no secrets travel)."""
    return {k: _text(fields.get(k)) for k in ("connection_id", "entity_type", "run_id")}
