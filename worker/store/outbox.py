"""Breaker transitions and the event outbox that is written with them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.errors import UnknownEvent
from worker.events import Event, EventStatus
from worker.store.base import StoreBase, Tx, translated
from worker.store.models import TransitionRecord

_EVENT_COLUMNS = (
    "id, type, connection_id, entity_type, created_at, body, status, attempts, "
    "next_attempt_at, first_attempt_at, last_error, delivered_at, seq, requeued_at"
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
    def take_notify_fence(self, connection_id: str) -> int:
        """Raise the connection's delivery fence and return it: the new holder's token.

        Called by a notifier right after it took the connection's delivery lock.
        Every notifier that took the lock before holds a smaller number, and
        ``mark_event`` refuses it from now on.
        """
        with self._write() as tx:
            row = tx.execute(
                "INSERT INTO notify_fences (connection_id, fence) VALUES (?, 1) "
                "ON CONFLICT (connection_id) DO UPDATE SET fence = notify_fences.fence + 1 "
                "RETURNING fence",
                (connection_id,),
            ).fetchone()
        return int(row[0])

    @translated
    def holds_notify_fence(self, connection_id: str, fence: int) -> bool:
        """Whether ``fence`` is still the connection's newest delivery token."""
        rows = self._read(
            "SELECT 1 FROM notify_fences WHERE connection_id = ? AND fence = ?",
            (connection_id, fence),
        )
        return bool(rows)

    @translated
    def mark_event(
        self,
        event_id: str,
        *,
        status: EventStatus,
        attempted_at: str,
        next_attempt_at: str | None = None,
        error: str | None = None,
        fence: tuple[str, int] | None = None,
        attempted: bool = True,
    ) -> bool:
        """Record one delivery attempt's outcome; False when it was not recorded.

        With ``fence`` (connection id, token) the outcome is recorded only if
        the token is still the connection's newest and the event still
        pending, in one transaction that locks the fence row: a notifier that
        took over meanwhile either waits for this mark or makes it fail, so it
        never reads an event as pending that this one delivered.
        ``attempted=False`` reschedules without counting an attempt (nothing was
        sent, e.g. this worker has no signing secret).
        """
        with self._write() as tx:
            guard = ""
            if fence is not None:
                # An UPDATE, not a SELECT: it holds the row until we commit.
                held = tx.execute(
                    "UPDATE notify_fences SET fence = fence WHERE connection_id = ? AND fence = ?",
                    fence,
                ).rowcount
                if not held:
                    return False
                guard = " AND status = 'pending'"
            updated = tx.execute(
                "UPDATE events SET status = ?, attempts = attempts + ?, "
                "first_attempt_at = CASE WHEN ? = 1 THEN COALESCE(first_attempt_at, ?) "
                "ELSE first_attempt_at END, "
                "next_attempt_at = COALESCE(?, next_attempt_at), last_error = ?, "
                "delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END "
                "WHERE id = ?" + guard,
                (
                    status.value,
                    1 if attempted else 0,
                    1 if attempted else 0,
                    attempted_at,
                    next_attempt_at,
                    error,
                    status.value,
                    attempted_at,
                    event_id,
                ),
            ).rowcount
        return bool(updated)

    @translated
    def redeliver(self, event_id: str, *, now: str) -> Event:
        """Queue an event again (dead, failed or delivered); it keeps its id.

        Its retry clock starts again now (``requeued_at``), so an old event
        gets the whole retry window once more.
        """
        with self._write() as tx:
            updated = tx.execute(
                "UPDATE events SET status = 'pending', next_attempt_at = ?, requeued_at = ?, "
                "first_attempt_at = NULL, last_error = NULL WHERE id = ?",
                (now, now, event_id),
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
        requeued_at=row[13],
    )
