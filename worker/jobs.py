"""Job payloads: the public contract of the tasks other services enqueue.

Each task takes its payload as keyword arguments (or one JSON object as its
only positional argument) and validates it here before doing anything. A
payload that does not validate is rejected with the validation message; it is
never retried, because sending it again would not make it valid.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Protocol, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from worker.entities import EntityType
from worker.errors import PayloadError
from worker.timeutil import canonical_instant

CONNECTION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"

ConnectionId = Annotated[str, StringConstraints(pattern=CONNECTION_ID_PATTERN)]
RequestId = Annotated[str, StringConstraints(min_length=1, max_length=100)]
# "upstream": the unified API said new data is there (a sync.completed webhook).
Trigger = Literal["manual", "scheduled", "continuation", "retry", "recovery", "probe", "upstream"]


class _Job(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyncConnectionJob(_Job):
    """`entity_sync.sync_connection`: sync some or all entity types of a connection."""

    connection_id: ConnectionId
    entity_types: Annotated[list[EntityType], Field(max_length=len(EntityType))] | None = None
    full: bool = False
    request_id: RequestId | None = None
    trigger: Trigger = "manual"


class SyncEntityJob(_Job):
    """`entity_sync.sync_entity`: sync one entity type of a connection."""

    connection_id: ConnectionId
    entity_type: EntityType
    full: bool = False
    request_id: RequestId | None = None
    trigger: Trigger = "manual"
    # Set by entity-sync itself when a run continues in a new task; other
    # services leave them out.
    run_id: RequestId | None = None
    resume_from: str | None = None
    horizon: str | None = None  # the newest change the run reads (worker/sync/pager.py)

    @field_validator("resume_from", "horizon")
    @classmethod
    def _instant(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # canonical_instant raises only ValueError, which pydantic reports as invalid.
        return canonical_instant(value)


def payload_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The payload from a task's arguments: keyword arguments or one object."""
    if args and kwargs:
        raise PayloadError("send the payload as keyword arguments or as one object, not both")
    if not args:
        return kwargs
    if len(args) == 1 and isinstance(args[0], dict):
        return args[0]
    raise PayloadError(f"expected one JSON object as the payload, got {len(args)} arguments")


J = TypeVar("J", bound=_Job)


def parse_job(model: type[J], args: tuple[Any, ...], kwargs: dict[str, Any]) -> J:
    """Validate a payload; PayloadError with every problem in one message."""
    payload = payload_of(args, kwargs)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'payload'}: {err['msg']}"
            for err in exc.errors()
        )
        raise PayloadError(f"invalid {model.__name__} payload: {problems}") from None


def is_valid_connection_id(value: str) -> bool:
    """Whether ``value`` may name a connection."""
    return re.fullmatch(CONNECTION_ID_PATTERN, value) is not None


# Every task name, defined here and nowhere else. Tasks are sent by name
# (send_task), never by import, so the worker never imports ``tasks``.
# Public: other services enqueue these.
SYNC_CONNECTION = "entity_sync.sync_connection"
SYNC_ENTITY = "entity_sync.sync_entity"

NOTIFY = "entity_sync.notify.deliver"
# Internal: a worker's own resume of a job it parked for a short while.
RESUME_PARKED_JOB = "entity_sync.resume_parked_job"
# Payload {"event_id": ...}: act on one webhook of the unified API the receiver kept.
UPSTREAM_EVENT = "entity_sync.upstream_event"
# Internal: housekeeping. Beat sends only the tick; the tick runs each step
# that is due (tasks/schedule.py STEPS), and each step is a task of its own.
HOUSEKEEPING_TICK = "entity_sync.housekeeping.tick"
SCHEDULE = "entity_sync.housekeeping.schedule"
RESUME_PARKED = "entity_sync.housekeeping.resume_parked"
PROBE = "entity_sync.housekeeping.probe"
RESEND_STALLED = "entity_sync.housekeeping.resend_stalled"
PRUNE_HISTORY = "entity_sync.housekeeping.prune_history"
SWEEP_OUTBOX = "entity_sync.housekeeping.sweep_outbox"
SWEEP_UPSTREAM_EVENTS = "entity_sync.housekeeping.sweep_upstream_events"


class Publish(Protocol):
    """Sends one job by task name; returns the task id.

    The one way a job leaves this package: the tasks pass the worker app's
    (``worker.celeryapp.app.publish``), the CLI and other services the
    client's (``worker.client.EntitySyncClient.send``). Nothing below them
    imports a Celery app.
    """

    def __call__(
        self,
        name: str,
        payload: dict[str, Any],
        queue: str | None,
        *,
        task_id: str | None = None,
        countdown: float | None = None,
    ) -> str: ...


def publisher(app: Any, **options: Any) -> Publish:
    """A ``Publish`` over a Celery app's ``send_task`` (``options``: its publish options)."""

    def publish(
        name: str,
        payload: dict[str, Any],
        queue: str | None,
        *,
        task_id: str | None = None,
        countdown: float | None = None,
    ) -> str:
        result = app.send_task(
            name, kwargs=payload, queue=queue, task_id=task_id, countdown=countdown, **options
        )
        return str(result.id)

    return publish


# Queues: a manual sync never waits behind scheduled ones, an incremental sync
# never behind a backfill, and webhooks and housekeeping behind none of them.
# A worker reads its queues in turn, so each queue gets a slot as one frees.
MANUAL_QUEUE = "sync_manual"
SYNC_QUEUE = "sync"
BACKFILL_QUEUE = "backfill"
NOTIFY_QUEUE = "notify"
HOUSEKEEPING_QUEUE = "housekeeping"
ALL_QUEUES = (MANUAL_QUEUE, SYNC_QUEUE, BACKFILL_QUEUE, NOTIFY_QUEUE, HOUSEKEEPING_QUEUE)


def sync_queue(*, trigger: str, full: bool, first_sync: bool) -> str:
    """The queue a sync_entity job goes to.

    A full resync reads everything: backfill. A person asked for this one:
    manual, even for a first sync. A scheduled first sync is a backfill too.
    """
    if full:
        return BACKFILL_QUEUE
    if trigger == "manual":
        return MANUAL_QUEUE
    return BACKFILL_QUEUE if first_sync else SYNC_QUEUE
