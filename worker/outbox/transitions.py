"""Breaker state changes: kept in the store with their event, told in the connection log."""

from __future__ import annotations

from collections.abc import Callable

from worker.errors import UpstreamError
from worker.events import PROBLEM_EVENTS, EventReason, EventType, build_event
from worker.logs import connection_log
from worker.observability.sentry import report_transition
from worker.resilience.breaker_types import State
from worker.resilience.guard import StateChange
from worker.store import SqlStore, TransitionRecord
from worker.timeutil import unix_to_instant, utc_now


def event_for_transition(
    *, level_is_connection: bool, from_state: State, to_state: State, last_event: str | None
) -> EventType | None:
    """The event a transition fires, if any (``last_event``: the subject's latest)."""
    if level_is_connection:
        if to_state is State.HALTED:
            return EventType.REAUTHORIZATION_REQUIRED
        if to_state is State.CLOSED and last_event in {e.value for e in PROBLEM_EVENTS}:
            return EventType.RECOVERED
        return None
    if to_state is State.BLOCKED:
        return EventType.ACCESS_LOST
    if from_state is State.BLOCKED and to_state is State.CLOSED:
        return EventType.ACCESS_RESTORED
    return None


def reason_of(cause: UpstreamError | None, fallback: str) -> EventReason:
    """The event's reason block from the failure behind a transition."""
    if cause is None:
        return EventReason(message=fallback)
    return EventReason(
        kind=cause.kind.value, http_status=cause.status, code=cause.code, message=cause.detail
    )


class TransitionRecorder:
    """Writes each StateChange, with the event it fires, to the store; then relays it."""

    def __init__(self, store: SqlStore, relay: Callable[[str], None]) -> None:
        self._store = store
        self._relay = relay

    def __call__(self, change: StateChange) -> None:
        until = unix_to_instant(change.until)
        event_type = event_for_transition(
            level_is_connection=change.entity_type is None,
            from_state=change.from_state,
            to_state=change.to_state,
            last_event=self._store.last_event_type(change.connection_id, change.entity_type),
        )
        event = (
            build_event(
                event_type,
                connection_id=change.connection_id,
                entity_type=change.entity_type,
                reason=reason_of(change.cause, change.reason),
            )
            if event_type
            else None
        )
        written = self._store.record_transition(
            TransitionRecord(
                connection_id=change.connection_id,
                entity_type=change.entity_type,
                from_state=change.from_state.value,
                to_state=change.to_state.value,
                reason=change.reason,
                until_at=until,
                at=utc_now(),
            ),
            event,
        )
        connection_log.warning(
            "%s -> %s: %s",
            change.from_state,
            change.to_state,
            change.reason,
            extra={
                "connection_id": change.connection_id,
                "entity_type": change.entity_type,
                "transition": f"{change.from_state}->{change.to_state}",
                "kind": change.cause.kind.value if change.cause else None,
                "until": until,
                "event": event.type if event and written else None,
            },
        )
        if written or event is None:  # an event repeating the latest is no news to Sentry either
            report_transition(change)
        if written:
            self._relay(change.connection_id)
