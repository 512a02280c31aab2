"""Breaker transitions and the event outbox that is written with them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.errors import UnknownEvent
from worker.store.base import StoreBase, Tx, translated
from worker.store.models import (
    Event,
    EventStatus,
    TransitionRecord,
)

_EVENT_COLUMNS = (
    "id, type, connection_id, entity_type, created_at, body, status, attempts, "
    "next_attempt_at, first_attempt_at, last_error, delivered_at, seq"
)
# Events that say the same thing twice in a row are one event: a flushed
# Redis can make a halted connection halt again, but its owner hears it once.
_EVENT_FAMILY = {
    "connection.reauthorization_required": "connection",
    "connection.unavailable": "connection",
    "connection.recovered": "connection",
    "entity.access_lost": "entity",
    "entity.access_restored": "entity",
}


class OutboxStore(StoreBase):
    """Transitions, and events to deliver in order per connection."""

    # -- transitions ---------------------------------------------------------------

    @translated
    def record_transition(self, transition: TransitionRecord, event: Event | None = None) -> bool:
        """Append a state change, and its event to the outbox, in one transaction.

        Returns whether the event was written: it is not when the connection's
        (or the entity type's) latest event already says the same thing.
        """
        with self._write() as tx:
            tx.execute(
                "INSERT INTO transitions (connection_id, entity_type, from_state, to_state, "
                "reason, until_at, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    transition.connection_id,
                    transition.entity_type,
                    transition.from_state,
                    transition.to_state,
                    transition.reason,
                    transition.until_at,
                    transition.at,
                ),
            )
            if event is None or _repeats(tx, event):
                return False
            insert_event(tx, event)
        return True

    @translated
    def add_event(self, event: Event) -> bool:
        """Put an event that no breaker transition carries in the outbox (deduplicated)."""
        with self._write() as tx:
            if _repeats(tx, event):
                return False
            insert_event(tx, event)
        return True

    @translated
    def unhealthy_since(self, connection_id: str) -> str | None:
        """When the connection's breaker last left ``closed`` without coming back."""
        rows = self._read(
            "SELECT to_state, at FROM transitions WHERE connection_id = ? "
            "AND entity_type IS NULL ORDER BY id DESC LIMIT 50",
            (connection_id,),
        )
        since = None
        for to_state, at in rows:
            if to_state == "closed":
                break
            since = at
        return since

    @translated
    def last_event_type(self, connection_id: str, entity_type: str | None) -> str | None:
        """The type of the newest event of a connection (or one of its entity types)."""
        rows = self._read(
            "SELECT type FROM events WHERE connection_id = ? AND "
            + ("entity_type IS NULL" if entity_type is None else "entity_type = ?")
            + " ORDER BY seq DESC LIMIT 1",
            (connection_id,) if entity_type is None else (connection_id, entity_type),
        )
        return rows[0][0] if rows else None

    # -- the outbox --------------------------------------------------------------------

    @translated
    def events(
        self,
        *,
        connection_id: str | None = None,
        status: str | None = None,
        failed_only: bool = False,
        limit: int = 100,
    ) -> list[Event]:
        """Events, newest last, filtered by connection and status."""
        clauses: list[str] = []
        params: list[Any] = []
        if connection_id:
            clauses.append("connection_id = ?")
            params.append(connection_id)
        if status:
            clauses.append("status = ?")
            params.append(status)
        if failed_only:
            clauses.append("attempts > 0 AND status = 'pending'")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events {where} ORDER BY seq DESC LIMIT ?",
            (*params, limit),
        )
        return [_event(row) for row in reversed(rows)]

    @translated
    def get_event(self, event_id: str) -> Event | None:
        """One event by id."""
        rows = self._read(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,))
        return _event(rows[0]) if rows else None

    @translated
    def pending_events(self, connection_id: str) -> list[Event]:
        """A connection's undelivered events, in the order they must arrive."""
        rows = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE connection_id = ? AND status = 'pending' "
            "ORDER BY seq",
            (connection_id,),
        )
        return [_event(row) for row in rows]

    @translated
    def connections_with_due_events(self, *, now: str, limit: int = 1000) -> list[str]:
        """Connections with a pending event whose next attempt is due."""
        rows = self._read(
            "SELECT DISTINCT connection_id FROM events WHERE status = 'pending' "
            "AND next_attempt_at <= ? LIMIT ?",
            (now, limit),
        )
        return [row[0] for row in rows]

    @translated
    def mark_event(
        self,
        event_id: str,
        *,
        status: EventStatus,
        attempted_at: str,
        next_attempt_at: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record one delivery attempt's outcome."""
        with self._write() as tx:
            tx.execute(
                "UPDATE events SET status = ?, attempts = attempts + 1, "
                "first_attempt_at = COALESCE(first_attempt_at, ?), "
                "next_attempt_at = COALESCE(?, next_attempt_at), last_error = ?, "
                "delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END "
                "WHERE id = ?",
                (
                    status.value,
                    attempted_at,
                    next_attempt_at,
                    error,
                    status.value,
                    attempted_at,
                    event_id,
                ),
            )

    @translated
    def redeliver(self, event_id: str, *, now: str) -> Event:
        """Queue an event again (dead, failed or delivered); it keeps its id."""
        with self._write() as tx:
            updated = tx.execute(
                "UPDATE events SET status = 'pending', next_attempt_at = ?, "
                "first_attempt_at = NULL, last_error = NULL WHERE id = ?",
                (now, event_id),
            ).rowcount
        if not updated:
            raise UnknownEvent(f"unknown event {event_id!r}")
        event = self.get_event(event_id)
        assert event is not None
        return event

    @translated
    def transitions(self, connection_id: str, *, limit: int = 100) -> list[TransitionRecord]:
        """The newest state changes of a connection, oldest first."""
        rows = self._read(
            "SELECT id, connection_id, entity_type, from_state, to_state, reason, until_at, at "
            "FROM transitions WHERE connection_id = ? ORDER BY id DESC LIMIT ?",
            (connection_id, limit),
        )
        return [
            TransitionRecord(
                id=int(row[0]),
                connection_id=row[1],
                entity_type=row[2],
                from_state=row[3],
                to_state=row[4],
                reason=row[5],
                until_at=row[6],
                at=row[7],
            )
            for row in reversed(rows)
        ]


def insert_event(tx: Tx, event: Event) -> None:
    tx.execute(
        "INSERT INTO events (id, type, connection_id, entity_type, created_at, body, status, "
        "next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.id,
            event.type,
            event.connection_id,
            event.entity_type,
            event.created_at,
            event.body_json,
            EventStatus.PENDING.value,
            event.next_attempt_at or event.created_at,
        ),
    )


def _repeats(tx: Tx, event: Event) -> bool:
    """Whether the latest event of the same subject already says this."""
    family = _EVENT_FAMILY.get(event.type)
    if family is None:
        return False
    if event.entity_type is None:
        query = "entity_type IS NULL"
        params: tuple[Any, ...] = (event.connection_id,)
    else:
        query = "entity_type = ?"
        params = (event.connection_id, event.entity_type)
    rows = tx.execute(
        f"SELECT type FROM events WHERE connection_id = ? AND {query} ORDER BY seq DESC LIMIT 1",
        params,
    ).fetchall()
    return bool(rows) and rows[0][0] == event.type


def _event(row: Sequence[Any]) -> Event:
    return Event(
        id=row[0],
        type=row[1],
        connection_id=row[2],
        entity_type=row[3],
        created_at=row[4],
        body_json=row[5],
        status=row[6],
        attempts=int(row[7]),
        next_attempt_at=row[8],
        first_attempt_at=row[9],
        last_error=row[10],
        delivered_at=row[11],
        seq=int(row[12]),
    )
