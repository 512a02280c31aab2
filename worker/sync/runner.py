"""Run one task's share of a sync run: lease, run history, slice, hand-over.

Plain functions the tasks call. A run of one (connection, entity type) may
span several tasks: each holds the pair's lease (its holder is
``<run id>/<task id>``), syncs one bounded slice, and either closes the run
or hands the lease to the task that continues it.

Every run ends (docs/design.md, "Every run ends"): whatever a step raises that is not an outage
of our own Redis or store (those retry), the run ends ``failed`` with kind
``internal`` and a redacted message, its lease and slot are freed and one
ERROR line (one Sentry event) says why. Ending it at the first occurrence is
also what stops a poison job: nothing is left for housekeeping to send again
into the same crash. How a run ends outside its own step (a crashed task,
a rejected payload) is in ``endings``; a poison message in ``poison``, which
the step's start finds (the delivery is counted in its one round trip).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from worker.coordination.lease import Leases, holder_of, parse_holder
from worker.coordination.scripts import ScriptCall
from worker.errors import (
    Blocked,
    CoordinationError,
    Deferred,
    Halted,
    Kind,
    PayloadError,
    RetryLater,
    SecretError,
    UpstreamError,
)
from worker.jobs import SYNC_ENTITY, SyncEntityJob
from worker.logs import connection_log, log
from worker.outbox.notifier import relay
from worker.redaction import redact
from worker.resilience.guard import Guard
from worker.runtime import Runtime
from worker.secrets import SecretBox
from worker.store import Connection, ParkedJob, Run, RunStatus, SqlStore
from worker.sync.full_read import report_full_read, verdict_for
from worker.sync.poison import dead_letter
from worker.sync.preflight import preflight
from worker.sync.round_trips import TaskStart, begin_task, send_ending, slice_ending
from worker.sync.slice import SliceResult, SliceTarget, sync_slice
from worker.sync.slot_wait import SLOT_WAIT_REASON, SLOT_WAIT_S
from worker.sync.task_failures import (
    INTERNAL,
    MAX_MESSAGE_CHARS,
    OPEN_STATUSES,
    is_outage,
    report_unexpected,
)
from worker.timeutil import unix_to_instant, utc_now


class TaskOutcome(StrEnum):
    """What a task did with its share of a run."""

    DONE = "done"  # the run finished
    CONTINUE = "continue"  # a successor task must carry on
    SKIPPED = "skipped"  # another run holds the pair
    FAILED = "failed"  # the run ended with an error (recorded)
    DEFERRED = "deferred"  # parked until a breaker, pause or slot allows
    RETRY = "retry"  # a transient failure: this task retries after backoff
    DEAD_LETTERED = "dead-lettered"  # delivered too many times: not run (a poison job)


@dataclass(frozen=True)
class TaskResult:
    """What one task did with its share of a run, and the successor's task id when it continues."""

    outcome: TaskOutcome
    run_id: str
    successor_task_id: str | None = None
    resume_from: str | None = None
    horizon: str | None = None  # CONTINUE: the run's horizon, for the successor
    detail: str | None = None
    retry_after: float | None = None
    kind: Kind | None = None
    parked_until: str | None = None  # DEFERRED: the park row's due time

    def summary(self) -> dict[str, Any]:
        """A small, secret-free result for Flower."""
        return {"outcome": self.outcome.value, "run_id": self.run_id, "detail": self.detail}


MAX_COUNTDOWN_S = 60.0  # longer waits are parked in the store, not held as ETA tasks


def connection_for(store: SqlStore, job: SyncEntityJob) -> Connection:
    """The job's connection, checking the entity type is one it syncs."""
    connection = store.get_connection(job.connection_id)
    if job.entity_type.value not in connection.entity_types:
        raise PayloadError(
            f"connection {connection.id!r} does not sync {job.entity_type.value!r} "
            f"(it syncs {', '.join(connection.entity_types)})"
        )
    return connection


def run_step(rt: Runtime, job: SyncEntityJob, *, task_id: str, retries: int) -> TaskResult:
    """Do this task's share of the run ``job`` belongs to.

    ``retries`` is the task's retry number: with its id it names this
    delivery of the message, counted in the start's round trip (after the
    connection is read, before the run is touched) so that a poison job is
    dead-lettered before it can run.

    It takes the whole runtime on purpose, as part of the edge: a step uses
    nearly every part of it (store, Redis, leases, limits, breaker, retry
    budgets, secrets, upstream client, settings, transitions, publish), and so
    do ``_held_step``, ``_slice``, ``_conclude``, ``fail_run`` and
    ``end_unexpectedly`` beneath it. A bundle of "the parts it uses" would be
    ``Runtime`` again. The helpers they call take only what they use.
    """
    connection = connection_for(rt.store, job)
    entity = job.entity_type.value
    run_id = job.run_id or task_id
    me = holder_of(run_id, task_id)
    start = begin_task(
        rt, connection.id, entity, me, first_task=job.run_id is None, delivery=(task_id, retries)
    )
    if start.deliveries > rt.settings.max_deliveries:
        return _dead_letter(rt, job, run_id, me, start, task_id=task_id)
    if start.holder != me:
        if start.slot:
            rt.limits.release_slot(connection.id, me)
        return _skip(rt.store, job, start.holder, run_id)
    try:
        return _held_step(rt, job, connection, run_id, me, start)
    except Exception as exc:
        if is_outage(exc):
            raise  # our Redis or store is down: the task retries, the run goes on
        return end_unexpectedly(rt, job, run_id, me, exc)


def _dead_letter(
    rt: Runtime, job: SyncEntityJob, run_id: str, me: str, start: TaskStart, *, task_id: str
) -> TaskResult:
    """Give back what the start took, then dead-letter the poison job (never raises).

    Freed first, so the pair is free for the next run and ``dead_letter`` sees
    who else holds the lease: another task of this run means it goes on there.
    """
    calls: list[ScriptCall] = []
    if start.slot:
        calls.append(rt.limits.slot_call("release", job.connection_id, me, ttl_s=0.0))
    if start.holder == me:
        calls.append(rt.leases.release_call(job.connection_id, job.entity_type.value, me))
    try:
        if calls:
            send_ending(rt, calls, job.connection_id)
    except CoordinationError:
        # Retrying would count again from one under a new retry number: the
        # poison job would run. The lease and slot expire with their TTL.
        log.warning("could not free the lease and slot of a poison job (they expire)")
    payload = job.model_dump(mode="json")
    dead_letter(rt, SYNC_ENTITY, payload, start.deliveries, task_id=task_id)
    return TaskResult(
        TaskOutcome.DEAD_LETTERED,
        run_id,
        detail=f"delivered {start.deliveries} times: dead-lettered",
    )


def _held_step(
    rt: Runtime, job: SyncEntityJob, connection: Connection, run_id: str, me: str, start: TaskStart
) -> TaskResult:
    """The step, with the pair's lease held (and a slot, when ``start.slot``)."""
    entity = job.entity_type.value
    ended = _open_run(rt.store, job, run_id)
    if ended is not None:
        # A second copy of a run's task (redelivered, or sent again after it
        # looked lost) arriving after the run ended: nothing left to do.
        if start.slot:
            rt.limits.release_slot(connection.id, me)
        rt.leases.release(connection.id, entity, me)
        return TaskResult(TaskOutcome.SKIPPED, run_id, detail=f"run already {ended}")
    if not start.slot:
        # Every slot of this connection is busy: other connections get the workers,
        # and the task that frees a slot wakes this job (worker/sync/slot_wait.py).
        waiting = Deferred(SLOT_WAIT_REASON, until=time.time() + SLOT_WAIT_S)
        return _park(job, run_id, me, waiting, None, store=rt.store, leases=rt.leases)
    guard = Guard(
        breaker=rt.breaker,
        connection_id=connection.id,
        entity_types_synced=len(connection.entity_types),
        on_transition=rt.transitions,
        carry_successes=True,  # one round trip per page; _slice_ending records the last
    )
    try:
        result = _slice(
            rt, job, connection, run_id, me, guard, preflight_cached=start.preflight_cached
        )
    except CoordinationError:
        # Redis is failing: freeing the slot would wait out a second timeout
        # before the outage is even logged. The slot expires with its TTL.
        raise
    except BaseException:
        rt.limits.release_slot(connection.id, me)  # a carried success is lost: one sample
        raise
    ending = slice_ending(rt, guard, connection.id, me)
    if not (result.done and result.stopped_by is None):
        send_ending(rt, ending, connection.id)
        ending = []
    return _conclude(rt, job, run_id, me, result, ending)


def _open_run(store: SqlStore, job: SyncEntityJob, run_id: str) -> str | None:
    """Start or rejoin the run; returns its status instead when it already ended."""
    existing = store.get_run(run_id)
    if existing is None:
        now = utc_now()
        store.start_run(
            Run(
                id=run_id,
                connection_id=job.connection_id,
                entity_type=job.entity_type.value,
                status=RunStatus.RUNNING,
                started_at=now,
                heartbeat_at=now,
                tasks=1,  # this one
                request_id=job.request_id,
                trigger=job.trigger,
                full=job.full,
            )
        )
        return None
    if existing.status not in OPEN_STATUSES:
        return existing.status
    store.touch_run(run_id, job.connection_id, job.entity_type.value)
    return None


def _slice(
    rt: Runtime,
    job: SyncEntityJob,
    connection: Connection,
    run_id: str,
    me: str,
    guard: Guard,
    *,
    preflight_cached: bool,
) -> SliceResult:
    """Preflight (first task of a run) and one slice; a stop comes back in the result."""
    entity = job.entity_type.value
    resume_from = job.resume_from if job.run_id == run_id else None
    horizon = job.horizon if job.run_id == run_id else None

    def renew() -> None:
        rt.leases.renew(connection.id, entity, me)
        rt.limits.renew_slot(connection.id, me, ttl_s=rt.settings.lease_ttl)

    renewer = Renewer(renew, every_s=rt.settings.lease_ttl / 3)
    try:
        target = SliceTarget(
            connection_id=connection.id,
            entity_type=entity,
            run_id=run_id,
            base_url=connection.upstream_url or rt.settings.upstream_url,
            token=_token(rt.secrets, connection),
            resume_from=resume_from,
            horizon=horizon,
            full=job.full,
        )
        # The cache read in begin_task spares the call when an answer is cached;
        # preflight reads it again just before asking, as a sibling task of
        # the fan-out may have cached one since.
        if job.run_id is None and not preflight_cached:
            preflight(
                guard=guard,
                client=rt.upstream,
                cache=rt.redis,
                connection_id=connection.id,
                base_url=target.base_url,
                token=target.token,
                cache_seconds=rt.settings.preflight_cache_seconds,
                store=rt.store,
            )
        return sync_slice(
            target,
            store=rt.store,
            client=rt.upstream,
            settings=rt.settings,
            guard=guard,
            before_page=renewer,
        )
    except (UpstreamError, SecretError, Deferred, Halted, Blocked, RetryLater) as exc:
        return SliceResult(False, resume_from, 0, 0, 0, exc, horizon)


def _conclude(
    rt: Runtime,
    job: SyncEntityJob,
    run_id: str,
    me: str,
    result: SliceResult,
    ending: list[ScriptCall],
) -> TaskResult:
    """Turn a slice's result into the run's next step.

    ``ending`` (the slice's last record and slot release, when the run is
    done) goes in the same round trip as the lease's release.
    """
    entity = job.entity_type.value
    stop = result.stopped_by
    if isinstance(stop, Deferred):
        return _park(job, run_id, me, stop, result, store=rt.store, leases=rt.leases)
    if isinstance(stop, RetryLater) and (stop.retry_after or 0) > MAX_COUNTDOWN_S:
        # A Celery countdown this long would sit in worker memory: park instead.
        later = Deferred(str(stop), until=time.time() + (stop.retry_after or 0))
        return _park(job, run_id, me, later, result, store=rt.store, leases=rt.leases)
    if isinstance(stop, RetryLater) and not rt.retry_budgets.spend(job.connection_id):
        # Retries must not multiply an outage: wait out the budget window instead.
        spent = Deferred(f"retry budget spent: {stop}", until=time.time() + MAX_COUNTDOWN_S)
        return _park(job, run_id, me, spent, result, store=rt.store, leases=rt.leases)
    if isinstance(stop, RetryLater):
        # The lease stays ours: the retry is this same task (same id), later.
        return TaskResult(
            TaskOutcome.RETRY,
            run_id,
            detail=str(stop),
            retry_after=stop.retry_after,
            kind=stop.kind,
        )
    if stop is not None:
        return fail_run(rt, job, run_id, me, stop)
    if result.done:
        verdict = None
        if job.full:
            evidence = rt.store.full_read_evidence(run_id)
            verdict = verdict_for(evidence, result.census, rt.settings)
        event = rt.store.finish_run(run_id, RunStatus.SUCCEEDED, verdict=verdict)
        held = report_full_read(rt.store, run_id, verdict) if verdict is not None else 0
        if event is not None or held:
            relay(rt.publish, job.connection_id)  # its events; the sweep is the fallback
        lease = rt.leases.release_call(job.connection_id, entity, me)
        send_ending(rt, [*ending, lease], job.connection_id)
        log.info("run finished", extra={"run_id": run_id, "pages": result.pages})
        return TaskResult(TaskOutcome.DONE, run_id)
    successor = str(uuid.uuid4())
    rt.leases.hand_over(job.connection_id, entity, me, holder_of(run_id, successor))
    return TaskResult(
        TaskOutcome.CONTINUE,
        run_id,
        successor_task_id=successor,
        resume_from=result.position,
        horizon=result.horizon,
    )


def fail_run(
    rt: Runtime, job: SyncEntityJob, run_id: str, me: str, error: BaseException
) -> TaskResult:
    """Close the run as failed with the error's kind, and free the pair."""
    kind = _kind_of(error)
    message = redact(str(error), limit=MAX_MESSAGE_CHARS)
    if (
        rt.store.finish_run(run_id, RunStatus.FAILED, error_kind=kind, error_message=message)
        is not None
    ):
        relay(rt.publish, job.connection_id)  # its sync.failed event; the sweep is the fallback
    rt.leases.release(job.connection_id, job.entity_type.value, me)
    connection_log.warning("run failed: %s", message, extra={"kind": kind, "run_id": run_id})
    return TaskResult(TaskOutcome.FAILED, run_id, detail=message)


def end_unexpectedly(
    rt: Runtime, job: SyncEntityJob, run_id: str, me: str, exc: BaseException
) -> TaskResult:
    """End the run ``failed`` (kind ``internal``) for an error nobody classified."""
    message = redact(f"unexpected {type(exc).__name__}: {exc}", limit=MAX_MESSAGE_CHARS)
    report_unexpected(run_id, message, exc)
    entity = job.entity_type.value
    try:
        rt.limits.release_slot(job.connection_id, me)
    except Exception:
        log.warning("could not free the connection slot (it expires with its TTL)")
    holder = rt.leases.holder(job.connection_id, entity)
    if holder not in (None, me):
        # Another task took the pair meanwhile; if it is this run's, it goes on.
        log.warning("the pair is held by %s now: run %s is left to it", holder, run_id)
        return TaskResult(TaskOutcome.FAILED, run_id, detail=message)
    try:
        rt.store.finish_run(run_id, RunStatus.FAILED, error_kind=INTERNAL, error_message=message)
    finally:
        # Even when the store cannot take the outcome now, the pair is free:
        # housekeeping finds the quiet run and sends it again.
        rt.leases.release(job.connection_id, entity, me)
    connection_log.warning("run failed: %s", message, extra={"kind": INTERNAL, "run_id": run_id})
    return TaskResult(TaskOutcome.FAILED, run_id, detail=message)


def _kind_of(error: BaseException) -> str:
    if isinstance(error, UpstreamError | RetryLater):
        return error.kind.value
    if isinstance(error, Halted):
        return Kind.AUTH.value
    if isinstance(error, Blocked):
        return "blocked"
    return Kind.BUG.value


def _park(
    job: SyncEntityJob,
    run_id: str,
    me: str,
    deferral: Deferred,
    progress: SliceResult | None,
    *,
    store: SqlStore,
    leases: Leases,
) -> TaskResult:
    """Park the job until the deferral's time; it burns no retry and holds no lease.

    ``progress`` is how far the slice read; None (no slice ran) keeps the
    job's own position and horizon.
    """
    moved = (
        {} if progress is None else {"resume_from": progress.position, "horizon": progress.horizon}
    )
    resumed = job.model_copy(update={"run_id": run_id, "trigger": "retry", **moved})
    due_at = unix_to_instant(deferral.until) or utc_now()
    store.park_job(
        ParkedJob(
            connection_id=job.connection_id,
            entity_type=job.entity_type.value,
            run_id=run_id,
            due_at=due_at,
            reason=deferral.reason,
            payload_json=resumed.model_dump_json(),
        )
    )
    leases.release(job.connection_id, job.entity_type.value, me)
    return TaskResult(TaskOutcome.DEFERRED, run_id, detail=deferral.reason, parked_until=due_at)


class Renewer:
    """Calls ``renew`` before a page at most every ``every_s`` seconds (fewer round trips)."""

    def __init__(self, renew: Callable[[], object], *, every_s: float) -> None:
        self._renew = renew
        self._every_s = every_s
        self._last = time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last >= self._every_s:
            self._renew()
            self._last = now


def _token(secrets: SecretBox, connection: Connection) -> str:
    if not connection.token_ciphertext:
        raise SecretError(
            f"connection {connection.id!r} has no token: `entity-sync connections set-token`"
        )
    return secrets.decrypt(connection.token_ciphertext)


def _skip(store: SqlStore, job: SyncEntityJob, holder: str, run_id: str) -> TaskResult:
    running_run, _ = parse_holder(holder)
    if running_run == run_id:
        # A stale copy of this run's task (redelivered after its slice was
        # handed on, or sent again by the stalled-run check): the run goes on
        # in the task holding the lease. Recording anything here would end
        # the very run that is still going.
        log.info("a later task of run %s holds the pair: this copy stands down", run_id)
        return TaskResult(
            TaskOutcome.SKIPPED, run_id, detail="a later task of this run holds the pair"
        )
    message = f"already running as run {running_run}"
    if store.skip_queued_run(run_id, coalesced_into=running_run, message=message):
        return TaskResult(TaskOutcome.SKIPPED, run_id, detail=message)
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
        error_message=message,
    )
    store.record_run(skipped)
    return TaskResult(TaskOutcome.SKIPPED, skipped.id, detail=skipped.error_message)
