"""The events the integrating service is told about: their types, bodies and outbox row.

What goes out, as ``jobs`` is what comes in: a public contract (docs/webhooks.md).
The builders are pure, so the store can write an event in the same
transaction as the change that caused it (a breaker transition through
``outbox.transitions.TransitionRecorder``, a run's end in ``store/``): it
survives a broker or Redis outage and a worker crash, and the notifier
delivers it as a signed webhook. Events fire on transitions, never on
failures: one per broken connection, however many workers hit the 401.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from worker.timeutil import parse_instant, utc_now


class EventType(StrEnum):
    """The public event types (the webhook's ``type`` field)."""

    REAUTHORIZATION_REQUIRED = "connection.reauthorization_required"
    RECOVERED = "connection.recovered"
    UNAVAILABLE = "connection.unavailable"
    ACCESS_LOST = "entity.access_lost"
    ACCESS_RESTORED = "entity.access_restored"
    SYNC_COMPLETED = "sync.completed"
    SYNC_FAILED = "sync.failed"
    DELETIONS_HELD = "deletions.held"


# Delivered only to connections that asked for them (`connections set-webhook
# ... --events`); the connection-state events above always are.
OPT_IN_EVENTS = frozenset({EventType.SYNC_COMPLETED, EventType.SYNC_FAILED})


class EventStatus(StrEnum):
    """Where an outbox event stands."""

    PENDING = "pending"  # not delivered yet (attempts > 0: failed so far, retrying)
    DELIVERED = "delivered"
    DEAD = "dead"  # given up on after the retry window; shown in status


@dataclass(frozen=True)
class Event:
    """One outbox event: what the integrating service is told, and its delivery."""

    id: str
    type: str
    connection_id: str
    entity_type: str | None
    created_at: str
    body_json: str
    status: str = EventStatus.PENDING
    attempts: int = 0
    next_attempt_at: str = ""
    first_attempt_at: str | None = None
    last_error: str | None = None
    delivered_at: str | None = None
    seq: int = 0
    requeued_at: str | None = None  # queued again by an operator: its retry clock starts here


@dataclass(frozen=True)
class RunSummary:
    """What a finished run did, as its sync.* event tells it."""

    run_id: str
    connection_id: str
    entity_type: str
    succeeded: bool
    trigger: str
    full: bool
    started_at: str
    finished_at: str
    received: int
    created: int
    updated: int
    deleted: int  # by deletedAt in a record the run read
    reconciled: int  # marked deleted because the complete read did not see them
    quarantined: int
    pages: int
    cursor: str | None
    error_kind: str | None = None
    error_message: str | None = None
    proved_complete: bool = False  # a full read that proved it read the whole list
    reconcile_note: str | None = None  # why it marked nothing, or what it holds
    held: int = 0  # deletions of the pair held for confirmation after the run


@dataclass(frozen=True)
class EventReason:
    """Why an event fired: the failure that caused the transition, if any."""

    kind: str | None = None
    http_status: int | None = None
    code: str | None = None
    message: str | None = None


def instruction(event_type: EventType, connection_id: str, entity_type: str | None) -> str:
    """What a person should do about it, in one paragraph."""
    if event_type is EventType.REAUTHORIZATION_REQUIRED:
        return (
            f"The credentials of connection {connection_id} no longer work. Ask the customer "
            "to reconnect the integration in their account. entity-sync stops calling the "
            "source and resumes by itself once the connection reports healthy again, or at "
            f"once after `entity-sync connections set-token {connection_id}`."
        )
    if event_type is EventType.UNAVAILABLE:
        return (
            f"The source system of connection {connection_id} has not answered for a while. "
            "entity-sync keeps retrying with backoff; check that the customer's system "
            "(often on-premises) is online and reachable."
        )
    if event_type is EventType.ACCESS_LOST:
        return (
            f"The account behind connection {connection_id} may not read {entity_type}. Grant "
            "read access in the source system; entity-sync re-checks on a slow schedule and "
            "resumes by itself, and the other entity types keep syncing meanwhile."
        )
    if event_type is EventType.DELETIONS_HELD:
        return (
            f"A complete read of {entity_type} on connection {connection_id} no longer found "
            "more records than entity-sync deletes on one read's word; they stay live for now. "
            "A later complete read confirms them after the confirmation delay, or run "
            f"`entity-sync deletions approve {connection_id} --entity {entity_type}` (or "
            "`discard`) once you have checked the source."
        )
    return "No action needed: syncing has resumed."


def build_event(
    event_type: EventType,
    *,
    connection_id: str,
    entity_type: str | None,
    reason: EventReason,
) -> Event:
    """A new outbox event with its JSON body (the webhook payload)."""
    event_id = f"evt_{uuid.uuid4().hex}"
    created_at = utc_now()
    body: dict[str, Any] = {
        "id": event_id,
        "type": event_type.value,
        "created_at": created_at,
        "connection_id": connection_id,
        "entity_type": entity_type,
        "reason": {
            "kind": reason.kind,
            "http_status": reason.http_status,
            "code": reason.code,
            "message": reason.message,
        },
        "instruction": instruction(event_type, connection_id, entity_type),
    }
    return Event(
        id=event_id,
        type=event_type.value,
        connection_id=connection_id,
        entity_type=entity_type,
        created_at=created_at,
        body_json=json.dumps(body, separators=(",", ":")),
        next_attempt_at=created_at,
    )


def build_run_event(run: RunSummary) -> Event:
    """The sync.completed or sync.failed outbox event of a finished run."""
    event_type = EventType.SYNC_COMPLETED if run.succeeded else EventType.SYNC_FAILED
    event_id = f"evt_{uuid.uuid4().hex}"
    created_at = utc_now()
    duration = parse_instant(run.finished_at) - parse_instant(run.started_at)
    body: dict[str, Any] = {
        "id": event_id,
        "type": event_type.value,
        "created_at": created_at,
        "connection_id": run.connection_id,
        "entity_type": run.entity_type,
        "run": {
            "id": run.run_id,
            "trigger": run.trigger,
            "full": run.full,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "duration_s": round(max(duration.total_seconds(), 0.0), 3),
            "pages": run.pages,
        },
        "records": {
            "received": run.received,
            "created": run.created,
            "updated": run.updated,
            "deleted": run.deleted + run.reconciled,
            "deleted_by_reconciliation": run.reconciled,
            "quarantined": run.quarantined,
        },
        # True only for a full read that proved it read the whole list and applied
        # what it found missing: nothing held back by the mass-deletion guard.
        "reconciled": run.succeeded and run.full and run.proved_complete and not run.held,
        "reconcile_reason": run.reconcile_note if run.full else None,
        "deletions_held": run.held,
        "cursor": run.cursor,
    }
    if not run.succeeded:
        body["reason"] = {
            "kind": run.error_kind,
            "http_status": None,
            "code": None,
            "message": run.error_message,
        }
    return Event(
        id=event_id,
        type=event_type.value,
        connection_id=run.connection_id,
        entity_type=run.entity_type,
        created_at=created_at,
        body_json=json.dumps(body, separators=(",", ":")),
        next_attempt_at=created_at,
    )


def build_held_event(
    *, connection_id: str, entity_type: str, run_id: str, held: int, note: str
) -> Event:
    """The ``deletions.held`` event: a complete read would delete too much at once."""
    event = build_event(
        EventType.DELETIONS_HELD,
        connection_id=connection_id,
        entity_type=entity_type,
        reason=EventReason(kind="deletions_held", message=note),
    )
    body = json.loads(event.body_json)
    body["deletions"] = {"held": held, "run_id": run_id}
    return replace(event, body_json=json.dumps(body, separators=(",", ":")))


# Which transitions say something the integrating service must hear.
PROBLEM_EVENTS = frozenset({EventType.REAUTHORIZATION_REQUIRED, EventType.UNAVAILABLE})
