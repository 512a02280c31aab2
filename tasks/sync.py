"""The public sync tasks: ``entity_sync.sync_connection`` and ``entity_sync.sync_entity``.

Payloads are validated first; an invalid one is rejected (logged and put in
the run history) and never retried. Store and Redis outages retry with
capped backoff; upstream failures are recorded on the run.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task
from celery.exceptions import Retry

from worker.celeryapp.app import app, publish
from worker.celeryapp.task_base import SyncTask, outage_retry
from worker.coordination.lease import holder_of
from worker.errors import (
    Kind,
    PayloadError,
    RetryLater,
    UnknownConnection,
)
from worker.jobs import (
    RESUME_PARKED_JOB,
    SYNC_CONNECTION,
    SYNC_ENTITY,
    SYNC_QUEUE,
    SyncConnectionJob,
    SyncEntityJob,
    parse_job,
    sync_queue,
)
from worker.logs import bound
from worker.resilience.backoff import retry_delay
from worker.runtime import Runtime, runtime
from worker.store import Run, RunStatus
from worker.sync.poison import dead_letter
from worker.sync.recovery import plan_self_resume
from worker.sync.runner import TaskOutcome, TaskResult, fail_run, run_step
from worker.sync.task_failures import end_crashed_task, is_outage, record_rejection
from worker.timeutil import utc_now

# Outages of our own infrastructure are worth retrying; the retry reuses the
# task id, so the task takes its own lease back.
_RETRY = outage_retry(base=SyncTask)


@app.task(name=SYNC_CONNECTION, bind=True, **_RETRY)
def sync_connection(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Fan out one sync_entity task per entity type of a connection."""
    rt = runtime(publish)
    task_id = str(self.request.id)
    if _poisoned(self, rt, SYNC_CONNECTION, args, kwargs):
        return {"outcome": "dead-lettered"}
    try:
        job = parse_job(SyncConnectionJob, args, kwargs)
        connection = rt.store.get_connection(job.connection_id)
        wanted = [t.value for t in job.entity_types] if job.entity_types else None
        types = list(connection.entity_types) if wanted is None else wanted
        unknown = sorted(set(types) - set(connection.entity_types))
        if unknown:
            raise PayloadError(f"connection {connection.id!r} does not sync {', '.join(unknown)}")
    except (PayloadError, UnknownConnection) as exc:
        record_rejection(
            rt, SYNC_CONNECTION, kwargs or (args[0] if args else None), exc, task_id=task_id
        )
        return {"outcome": "rejected", "detail": str(exc)}
    with bound(connection_id=connection.id, task_id=task_id):
        runs = [_queued_run(rt, job, connection.id, entity) for entity in types]
        # Recorded before sending: a message the broker loses leaves a queued
        # run that housekeeping finds and sends again (worker/sync/recovery.py).
        rt.store.queue_runs(runs)
        for run in runs:
            publish(
                SYNC_ENTITY,
                {
                    "connection_id": connection.id,
                    "entity_type": run.entity_type,
                    "full": job.full,
                    "request_id": job.request_id,
                    "trigger": job.trigger,
                },
                run.queue,
                task_id=run.id,  # the first task's id is its run's id
            )
    return {"outcome": "fanned_out", "entity_types": types}


def _queued_run(rt: Runtime, job: SyncConnectionJob, connection_id: str, entity: str) -> Run:
    first_sync = rt.store.get_cursor(connection_id, entity) is None
    now = utc_now()
    return Run(
        id=str(uuid.uuid4()),
        connection_id=connection_id,
        entity_type=entity,
        status=RunStatus.QUEUED,
        started_at=now,
        heartbeat_at=now,
        request_id=job.request_id,
        trigger=job.trigger,
        full=job.full,
        queue=sync_queue(trigger=job.trigger, full=job.full, first_sync=first_sync),
    )


@app.task(name=SYNC_ENTITY, bind=True, **_RETRY)
def sync_entity(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Sync one entity type of one connection for a bounded slice, then continue."""
    rt = runtime(publish)
    task_id = str(self.request.id)
    try:
        job = parse_job(SyncEntityJob, args, kwargs)
        with bound(
            connection_id=job.connection_id, entity_type=job.entity_type.value, task_id=task_id
        ):
            # The step counts this delivery in its start's round trip, and
            # dead-letters a poison job there (worker/sync/poison.py).
            step = run_step(rt, job, task_id=task_id, retries=int(self.request.retries))
            if step.outcome is TaskOutcome.RETRY:
                return _retry_or_fail(self, rt, job, step)
            if step.outcome is TaskOutcome.DEFERRED:
                _resume_soon(self, rt, job, step)
            if step.outcome is TaskOutcome.CONTINUE:
                continuation = job.model_copy(
                    update={
                        "run_id": step.run_id,
                        "trigger": "continuation",
                        "resume_from": step.resume_from,
                        "horizon": step.horizon,
                    }
                )
                publish(
                    SYNC_ENTITY,
                    continuation.model_dump(mode="json"),
                    # A run continues in the queue it started in: a backfill
                    # stays behind manual and incremental work.
                    _queue_of(self),
                    task_id=step.successor_task_id,
                )
            return step.summary()
    except (PayloadError, UnknownConnection) as exc:
        record_rejection(
            rt, SYNC_ENTITY, kwargs or (args[0] if args else None), exc, task_id=task_id
        )
        return {"outcome": "rejected", "detail": str(exc)}
    except Exception as exc:
        if isinstance(exc, Retry) or is_outage(exc):
            raise
        # Every run ends (worker/sync/runner.py): raised outside the step, it ends here,
        # redacted, rather than as a task failure whose text Celery logs verbatim.
        fields = kwargs or (args[0] if args and isinstance(args[0], dict) else {})
        end_crashed_task(rt, fields, task_id, exc)
        return {"outcome": "failed", "detail": f"unexpected {type(exc).__name__}"}


def _resume_soon(task: Task, rt: Runtime, job: SyncEntityJob, step: TaskResult) -> None:
    """A job parked for a short while is resumed by a worker, with no beat needed."""
    if step.parked_until is None:
        return
    entity = job.entity_type.value
    countdown = plan_self_resume(rt.redis, job.connection_id, entity, step.parked_until)
    if countdown is None:
        return  # a long deferral: beat's resume_parked sends it when due
    publish(
        RESUME_PARKED_JOB,
        {
            "connection_id": job.connection_id,
            "entity_type": entity,
            "run_id": step.run_id,
            "due_at": step.parked_until,
        },
        _queue_of(task),  # a queue this worker reads
        countdown=countdown,
    )


def _retry_or_fail(task: Task, rt: Runtime, job: SyncEntityJob, step: TaskResult) -> dict[str, Any]:
    """Retry a transient failure with capped full-jitter backoff, or give up."""
    attempt = int(task.request.retries)
    if attempt >= rt.settings.max_retries:
        error = RetryLater(
            f"gave up after {attempt} retries: {step.detail}", kind=step.kind or Kind.UNAVAILABLE
        )
        return fail_run(
            rt, job, step.run_id, holder_of(step.run_id, str(task.request.id)), error
        ).summary()
    countdown = retry_delay(
        attempt,
        base=1.0,
        cap=rt.settings.retry_backoff_cap_seconds,
        retry_after=step.retry_after,
    )
    raise task.retry(countdown=countdown, max_retries=None)


def _queue_of(task: Task) -> str:
    """The queue this task was delivered from (the routing key of its message)."""
    info = task.request.delivery_info or {}
    return str(info.get("routing_key") or SYNC_QUEUE)


def _poisoned(
    task: Task, rt: Runtime, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bool:
    """Count this delivery; dead-letter the job when it came back too often.

    For ``sync_connection``, which takes no lease: ``sync_entity`` counts in
    its start's round trip instead (``run_step``).
    """
    task_id = str(task.request.id)
    deliveries = rt.deliveries.count(task_id, int(task.request.retries))
    if deliveries <= rt.settings.max_deliveries:
        return False
    dead_letter(rt, name, kwargs or (args[0] if args else None), deliveries, task_id=task_id)
    return True
