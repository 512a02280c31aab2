"""Webhooks the unified API sends: the events as received and the newest event
applied per connection and aspect (worker/inbound/actions.py acts on them; which
connection an event names is ``upstream_ids.py``).

An event is written here by the receiver before it answers, keyed by the
upstream's event id, so a redelivery is one row; its ``status`` then says what
became of it:

    received   recorded, not processed yet (a task or the sweep will)
    applied    acted on for every connection that maps to its id
    ignored    nothing to do (older than the last one applied, or not relevant)
    unmapped   no registered connection has its upstream id yet: kept, reported,
               and processed again once a preflight learns the id
    stale      was unmapped, and too old to act on when the id was learned
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from worker.store.base import StoreBase, translated
from worker.timeutil import utc_now


class UpstreamEventStatus(StrEnum):
    """What became of an upstream event (see the module docstring)."""

    RECEIVED = "received"
    APPLIED = "applied"
    IGNORED = "ignored"
    UNMAPPED = "unmapped"
    STALE = "stale"


@dataclass(frozen=True)
class UpstreamEvent:
    """One webhook of the unified API, as received (``body`` is the raw JSON)."""

    id: str
    type: str
    upstream_connection_id: str
    created_at: str  # canonical UTC text
    received_at: str
    body: str
    status: str = UpstreamEventStatus.RECEIVED.value
    connection_ids: str | None = None  # ours, comma-separated, once processed
    outcome: str | None = None
    attempts: int = 0
    processed_at: str | None = None


@dataclass(frozen=True)
class UpstreamAspect:
    """The newest upstream event applied to one connection for one aspect."""

    connection_id: str
    aspect: str  # auth, availability, sync, error
    event_id: str
    event_type: str
    created_at: str
    applied_at: str
    kind: str | None = None  # the error table's kind (sync.failed, connection.error)
    entity_types: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class PrunedUpstream:
    """Rows one ``prune_upstream`` deleted; ``more``: a full batch was left."""

    events: int = 0
    aspects: int = 0
    more: bool = False


_PROCESSED = (
    UpstreamEventStatus.APPLIED,
    UpstreamEventStatus.IGNORED,
    UpstreamEventStatus.STALE,
)

# Through upstream_events_by_status (status, received_at): at most ``limit`` index entries.
BACKLOG_SQL = (
    "SELECT COUNT(*) FROM (SELECT 1 FROM upstream_events WHERE status = ? "
    "AND received_at <= ? LIMIT ?) AS waiting"
)

_EVENT_COLUMNS = (
    "id, type, upstream_connection_id, created_at, received_at, body, status, "
    "connection_ids, outcome, attempts, processed_at"
)
_ASPECT_COLUMNS = (
    "connection_id, aspect, event_id, event_type, created_at, applied_at, kind, "
    "entity_types, message"
)


class InboundStore(StoreBase):
    """Upstream events and the aspects applied."""

    # -- events ----------------------------------------------------------------------

    @translated
    def record_upstream_event(self, event: UpstreamEvent) -> bool:
        """Keep an event; False when one with its id is already kept (a redelivery)."""
        with self._write() as tx:
            inserted = tx.execute(
                f"INSERT INTO upstream_events ({_EVENT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, 0, NULL) ON CONFLICT (id) DO NOTHING",
                (
                    event.id,
                    event.type,
                    event.upstream_connection_id,
                    event.created_at,
                    event.received_at,
                    event.body,
                    UpstreamEventStatus.RECEIVED.value,
                ),
            ).rowcount
        return bool(inserted == 1)

    @translated
    def get_upstream_event(self, event_id: str) -> UpstreamEvent | None:
        """One event by the upstream's id."""
        rows = self._read(f"SELECT {_EVENT_COLUMNS} FROM upstream_events WHERE id = ?", (event_id,))
        return _event(rows[0]) if rows else None

    @translated
    def upstream_events(
        self, *, status: str | None = None, limit: int = 100
    ) -> list[UpstreamEvent]:
        """Events, newest received last, optionally of one status."""
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        rows = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM upstream_events {where} "
            "ORDER BY received_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [_event(row) for row in reversed(rows)]

    @translated
    def unprocessed_upstream_events(self, *, received_before: str, limit: int = 500) -> list[str]:
        """Ids of events still ``received`` that arrived before an instant, oldest first."""
        rows = self._read(
            "SELECT id FROM upstream_events WHERE status = ? AND received_at <= ? "
            "ORDER BY received_at LIMIT ?",
            (UpstreamEventStatus.RECEIVED.value, received_before, limit),
        )
        return [row[0] for row in rows]

    @translated
    def finish_upstream_event(
        self,
        event_id: str,
        status: UpstreamEventStatus,
        *,
        outcome: str,
        connection_ids: Sequence[str] = (),
    ) -> None:
        """Record what processing an event did."""
        with self._write() as tx:
            tx.execute(
                "UPDATE upstream_events SET status = ?, outcome = ?, connection_ids = ?, "
                "attempts = attempts + 1, processed_at = ? WHERE id = ?",
                (
                    status.value,
                    outcome[:2000],
                    ",".join(connection_ids) or None,
                    utc_now(),
                    event_id,
                ),
            )

    @translated
    def upstream_backlog(self, *, received_before: str, limit: int) -> int:
        """Events still ``received`` that arrived before an instant, counted up to ``limit``.

        A bounded read through ``upstream_events_by_status`` whatever the table's
        size: the unauthenticated ``/healthz`` calls it.
        """
        rows = self._read(BACKLOG_SQL, (UpstreamEventStatus.RECEIVED.value, received_before, limit))
        return int(rows[0][0])

    @translated
    def prune_upstream(
        self,
        *,
        processed_before: str,
        unmapped_before: str,
        future_after: str,
        batch: int = 1000,
        max_batches: int = 50,
    ) -> PrunedUpstream:
        """Delete old upstream events and aspects, in batches of ``batch`` rows.

        Events processed (applied, ignored, stale) that arrived before
        ``processed_before``, and those kept for an unknown connection id that
        arrived before ``unmapped_before``; one still ``received`` never. The
        caller keeps both instants older than the freshness window plus its skew,
        so an id is remembered as long as a replay of it could be accepted.
        Aspects go once their event was created before ``processed_before``
        (any event arriving now is newer), or when dated after ``future_after``
        (kept before the receiver bounded the future: it would win every
        ordering comparison for good).
        """
        deleted, more = 0, False
        jobs = [(status.value, processed_before) for status in _PROCESSED] + [
            (UpstreamEventStatus.UNMAPPED.value, unmapped_before)
        ]
        for status, before in jobs:
            for _ in range(max_batches):
                with self._write() as tx:
                    step = int(
                        tx.execute(
                            "DELETE FROM upstream_events WHERE id IN (SELECT id FROM "
                            "upstream_events WHERE status = ? AND received_at < ? LIMIT ?)",
                            (status, before, batch),
                        ).rowcount
                    )
                deleted += step
                if step < batch:
                    break
            else:
                more = True
        with self._write() as tx:
            # One row per connection and aspect: small, no batching needed.
            aspects = int(
                tx.execute(
                    "DELETE FROM upstream_aspects WHERE created_at < ? OR created_at > ?",
                    (processed_before, future_after),
                ).rowcount
            )
        return PrunedUpstream(events=deleted, aspects=aspects, more=more)

    # -- aspects ---------------------------------------------------------------------

    @translated
    def apply_aspect(self, aspect: UpstreamAspect) -> bool:
        """Make ``aspect`` the newest applied, unless a newer event was applied already.

        False when the stored one was created later (this event arrived out of
        order). The same event applied again (a crash before its status was
        written) returns True: every action taken on an event is idempotent.
        """
        with self._write() as tx:
            rows = tx.execute(
                "SELECT event_id, created_at FROM upstream_aspects "
                "WHERE connection_id = ? AND aspect = ?",
                (aspect.connection_id, aspect.aspect),
            ).fetchall()
            if rows and rows[0][0] != aspect.event_id and rows[0][1] > aspect.created_at:
                return False
            tx.execute(
                f"INSERT INTO upstream_aspects ({_ASPECT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (connection_id, aspect) DO UPDATE "
                "SET event_id = excluded.event_id, event_type = excluded.event_type, "
                "created_at = excluded.created_at, applied_at = excluded.applied_at, "
                "kind = excluded.kind, entity_types = excluded.entity_types, "
                "message = excluded.message",
                (
                    aspect.connection_id,
                    aspect.aspect,
                    aspect.event_id,
                    aspect.event_type,
                    aspect.created_at,
                    aspect.applied_at,
                    aspect.kind,
                    aspect.entity_types,
                    aspect.message,
                ),
            )
        return True

    @translated
    def upstream_aspects(self, connection_id: str | None = None) -> list[UpstreamAspect]:
        """The newest event applied per connection and aspect."""
        where, params = ("WHERE connection_id = ?", (connection_id,)) if connection_id else ("", ())
        rows = self._read(
            f"SELECT {_ASPECT_COLUMNS} FROM upstream_aspects {where} "
            "ORDER BY connection_id, aspect",
            params,
        )
        return [UpstreamAspect(*row) for row in rows]

    @translated
    def parked_due_now(self, connection_id: str) -> int:
        """Make every parked job of a connection due now; returns how many."""
        now = utc_now()
        with self._write() as tx:
            moved = tx.execute(
                "UPDATE parked_jobs SET due_at = ? WHERE connection_id = ? AND due_at > ?",
                (now, connection_id, now),
            ).rowcount
        return int(moved)

    @translated
    def queued_runs_of(self, connection_id: str) -> dict[str, str]:
        """Entity type -> id of a run of the connection still ``queued`` (not started)."""
        rows = self._read(
            "SELECT entity_type, id FROM runs WHERE connection_id = ? AND status = 'queued' "
            "ORDER BY started_at",
            (connection_id,),
        )
        return {row[0]: row[1] for row in rows}


def _event(row: Sequence[Any]) -> UpstreamEvent:
    return UpstreamEvent(
        id=row[0],
        type=row[1],
        upstream_connection_id=row[2],
        created_at=row[3],
        received_at=row[4],
        body=row[5],
        status=row[6],
        connection_ids=row[7],
        outcome=row[8],
        attempts=int(row[9]),
        processed_at=row[10],
    )
