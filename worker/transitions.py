"""Breaker state changes, kept in the store's history and told in the connection log."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.guard import StateChange
from worker.logs import connection_log
from worker.store import SqlStore, TransitionRecord
from worker.timeutil import canonical, utc_now


def unix_to_instant(seconds: float | None) -> str | None:
    """A Redis-clock unix time as the store's canonical text."""
    return None if seconds is None else canonical(datetime.fromtimestamp(seconds, UTC))


class TransitionRecorder:
    """Writes each StateChange to the store and the connections log."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def __call__(self, change: StateChange) -> None:
        until = unix_to_instant(change.until)
        self._store.record_transition(
            TransitionRecord(
                connection_id=change.connection_id,
                entity_type=change.entity_type,
                from_state=change.from_state,
                to_state=change.to_state,
                reason=change.reason,
                until_at=until,
                at=utc_now(),
            )
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
                "until": until,
            },
        )
