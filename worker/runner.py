"""Run one task's share of a sync run: lease, run history, slice, hand-over.

Plain functions the tasks call. A run of one (connection, entity type) may
span several tasks: each holds the pair's lease (its holder is
``<run id>/<task id>``), syncs one bounded slice, and either closes the run
or hands the lease to the task that continues it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from worker.errors import Kind, PayloadError, SecretError, UpstreamError
from worker.jobs import SyncEntityJob
from worker.logs import connection_log, log
from worker.runtime import Runtime
from worker.store import Connection, Run, RunStatus
from worker.sync import SliceTarget, sync_slice
from worker.timeutil import utc_now


class StepOutcome(StrEnum):
    """What a task did with its share of a run."""

    DONE = "done"  # the run finished
    CONTINUE = "continue"  # a successor task must carry on
    SKIPPED = "skipped"  # another run holds the pair
    FAILED = "failed"  # the run ended with an error (recorded)


@dataclass(frozen=True)
class Step:
    """The outcome, and the successor's task id when the run continues."""

    outcome: StepOutcome
    run_id: str
    successor_task_id: str | None = None
    resume_from: str | None = None
    detail: str | None = None

    def summary(self) -> dict[str, Any]:
        """A small, secret-free result for Flower."""
        return {"outcome": self.outcome.value, "run_id": self.run_id, "detail": self.detail}


def holder_of(run_id: str, task_id: str) -> str:
    """The lease holder string of one task of one run."""
    return f"{run_id}/{task_id}"


def connection_for(rt: Runtime, job: SyncEntityJob) -> Connection:
    """The job's connection, checking the entity type is one it syncs."""
    connection = rt.store.get_connection(job.connection_id)
    if job.entity_type.value not in connection.entity_types:
        raise PayloadError(
            f"connection {connection.id!r} does not sync {job.entity_type.value!r} "
            f"(it syncs {', '.join(connection.entity_types)})"
        )
    return connection


def run_step(rt: Runtime, job: SyncEntityJob, *, task_id: str) -> Step:
    """Do this task's share of the run ``job`` belongs to."""
    connection = connection_for(rt, job)
    entity = job.entity_type.value
    run_id = job.run_id or task_id
    me = holder_of(run_id, task_id)
    holder = rt.leases.acquire(connection.id, entity, me)
    if holder != me:
        return _skip(rt, job, holder)
    if rt.store.get_run(run_id) is None:
        rt.store.start_run(
            Run(
                id=run_id,
                connection_id=connection.id,
                entity_type=entity,
                status=RunStatus.RUNNING,
                started_at=utc_now(),
                request_id=job.request_id,
                trigger=job.trigger,
                full=job.full,
            )
        )
    rt.store.touch_run(run_id)
    try:
        target = SliceTarget(
            connection_id=connection.id,
            entity_type=entity,
            run_id=run_id,
            base_url=connection.upstream_url or rt.settings.upstream_url,
            token=_token(rt, connection),
            resume_from=job.resume_from if job.run_id == run_id else None,
        )
        result = sync_slice(
            target,
            store=rt.store,
            client=rt.upstream,
            settings=rt.settings,
            before_page=lambda: rt.leases.renew(connection.id, entity, me),
        )
    except (UpstreamError, SecretError) as exc:
        kind = exc.kind if isinstance(exc, UpstreamError) else Kind.BUG
        rt.store.finish_run(run_id, RunStatus.FAILED, error_kind=kind, error_message=str(exc))
        rt.leases.release(connection.id, entity, me)
        connection_log.warning("run failed: %s", exc, extra={"kind": kind.value, "run_id": run_id})
        return Step(StepOutcome.FAILED, run_id, detail=str(exc))
    if result.done:
        rt.store.finish_run(run_id, RunStatus.SUCCEEDED)
        rt.leases.release(connection.id, entity, me)
        log.info("run finished", extra={"run_id": run_id, "pages": result.pages})
        return Step(StepOutcome.DONE, run_id)
    successor = str(uuid.uuid4())
    rt.leases.hand_over(connection.id, entity, me, holder_of(run_id, successor))
    return Step(
        StepOutcome.CONTINUE, run_id, successor_task_id=successor, resume_from=result.position
    )


def _token(rt: Runtime, connection: Connection) -> str:
    if not connection.token_ciphertext:
        raise SecretError(
            f"connection {connection.id!r} has no token: `entity-sync connections set-token`"
        )
    return rt.secrets.decrypt(connection.token_ciphertext)


def _skip(rt: Runtime, job: SyncEntityJob, holder: str) -> Step:
    running_run = holder.split("/", 1)[0]
    skipped = Run(
        id=str(uuid.uuid4()),
        connection_id=job.connection_id,
        entity_type=job.entity_type.value,
        status=RunStatus.SKIPPED,
        started_at=utc_now(),
        finished_at=utc_now(),
        request_id=job.request_id,
        trigger=job.trigger,
        full=job.full,
        coalesced_into=running_run,
        error_message=f"already running as run {running_run}",
    )
    rt.store.record_run(skipped)
    return Step(StepOutcome.SKIPPED, skipped.id, detail=skipped.error_message)


def record_rejection(rt: Runtime, task_name: str, payload: object, error: Exception) -> None:
    """Put a rejected job in the run history and the log (never raises)."""
    fields = payload if isinstance(payload, dict) else {}

    def text(name: str) -> str | None:
        value = fields.get(name)
        return value[:128] if isinstance(value, str) else None

    message = f"{task_name}: {error}"[:2000]
    log.error("job rejected: %s", message, extra={"task_name": task_name})
    try:
        rt.store.record_run(
            Run(
                id=str(uuid.uuid4()),
                connection_id=text("connection_id"),
                entity_type=text("entity_type"),
                status=RunStatus.REJECTED,
                started_at=utc_now(),
                finished_at=utc_now(),
                request_id=text("request_id"),
                error_kind=Kind.BAD_REQUEST.value,
                error_message=message,
            )
        )
    except Exception:
        log.exception("could not record the rejected job in the run history")
