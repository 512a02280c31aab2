"""What a run changed, deletions found by a complete read, and the run's events.

A source that deletes for real just stops listing a key. Only a complete read
can tell: a full run that succeeded and proved its read complete
(``FullReadVerdict``, from ``worker/sync/full_read.py``) marks the live keys it
did not read as deleted (``deleted_by`` = 'reconciliation'), in the
transaction that ends it, within the mass-deletion guard of
``held_deletions``. Two marks keep it honest:

- ``records.seen_by_run``: every page commit stamps the keys it read
  (quarantined ones included: the source still has them) with the run's id;
- the run's ``started_at``: a key written after the run began (by anyone) is
  kept, whether or not this run read it.

A failed run, one still going, one whose read is not proved complete and an
incremental run mark nothing. Times are the workers' clocks, like every
instant in the store: a key another worker wrote just after the read began,
on a clock running behind by more than that, could be marked; it comes back
live on its next read.

The page's stamps are written with its records (``store/page_write.py``);
``on_run_end`` takes the caller's transaction, inside ``SyncStore.finish_run``.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.events import Event, EventType, RunSummary, build_held_event, build_run_event
from worker.store.base import StoreBase, Tx, translated
from worker.store.held_deletions import Reconciliation, reconcile_full_read
from worker.store.models import FullReadEvidence, FullReadVerdict, RunStatus
from worker.store.outbox import insert_event
from worker.timeutil import utc_now


def on_run_end(
    tx: Tx, run_id: str, status: RunStatus, verdict: FullReadVerdict | None = None
) -> Event | None:
    """A run has just ended with ``status``: reconcile after a successful full read
    (``verdict`` says whether it proved complete), write the consumer's event of a
    new hold, and the run's sync.* event when its connection asked for it."""
    rows = tx.execute(
        "SELECT connection_id, entity_type, is_full, started_at, finished_at, trigger, "
        "records, quarantined, pages, created, updated, deleted, error_kind, error_message "
        "FROM runs WHERE id = ?",
        (run_id,),
    ).fetchall()
    if not rows or rows[0][0] is None or rows[0][1] is None:
        return None
    (connection_id, entity, full, started_at, finished_at, trigger, received, quarantined) = rows[
        0
    ][:8]
    pages, created, updated, deleted, error_kind, error_message = rows[0][8:]
    reconciliation: Reconciliation | None = None
    if status is RunStatus.SUCCEEDED and bool(full):
        reconciliation = reconcile_full_read(
            tx,
            run_id=run_id,
            connection_id=connection_id,
            entity_type=entity,
            started_at=started_at,
            finished_at=finished_at,
            verdict=verdict,
        )
    if reconciliation is not None and reconciliation.held_now:
        # A person must decide: this one is sent whatever the connection opted into.
        insert_event(
            tx,
            build_held_event(
                connection_id=connection_id,
                entity_type=entity,
                run_id=run_id,
                held=reconciliation.held,
                note=reconciliation.note or "",
            ),
        )
    if status not in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        return None
    wanted = tx.execute(
        "SELECT webhook_events FROM connections WHERE id = ?", (connection_id,)
    ).fetchall()
    kind = EventType.SYNC_COMPLETED if status is RunStatus.SUCCEEDED else EventType.SYNC_FAILED
    if not wanted or kind.value not in split_events(wanted[0][0]):
        return None
    cursor = tx.execute(
        "SELECT since FROM cursors WHERE connection_id = ? AND entity_type = ?",
        (connection_id, entity),
    ).fetchall()
    event = build_run_event(
        RunSummary(
            run_id=run_id,
            connection_id=connection_id,
            entity_type=entity,
            succeeded=status is RunStatus.SUCCEEDED,
            trigger=trigger,
            full=bool(full),
            started_at=started_at,
            finished_at=finished_at or utc_now(),
            received=int(received),
            created=int(created),
            updated=int(updated),
            deleted=int(deleted),
            reconciled=reconciliation.marked if reconciliation else 0,
            quarantined=int(quarantined),
            pages=int(pages),
            cursor=cursor[0][0] if cursor else None,
            error_kind=error_kind,
            error_message=error_message,
            proved_complete=bool(reconciliation and reconciliation.complete),
            reconcile_note=reconciliation.note if reconciliation else None,
            held=reconciliation.held if reconciliation else 0,
        )
    )
    insert_event(tx, event)
    return event


def split_events(value: str | None) -> list[str]:
    """The stored comma-separated event types as a list."""
    return [part for part in (value or "").split(",") if part]


class RunEndStore(StoreBase):
    """What a run's end reads (the opt-in events, the reconciliation interval) and leaves."""

    @translated
    def set_webhook_events(self, connection_id: str, events: Sequence[str]) -> None:
        """The opt-in event types a connection receives (empty: none)."""
        from worker.errors import UnknownConnection

        with self._write() as tx:
            updated = tx.execute(
                "UPDATE connections SET webhook_events = ?, updated_at = ? WHERE id = ?",
                (",".join(sorted(set(events))) or None, utc_now(), connection_id),
            ).rowcount
        if not updated:
            raise UnknownConnection(f"unknown connection {connection_id!r}")

    @translated
    def webhook_events(self, connection_id: str) -> list[str]:
        """The opt-in event types a connection receives."""
        rows = self._read("SELECT webhook_events FROM connections WHERE id = ?", (connection_id,))
        return split_events(rows[0][0]) if rows else []

    @translated
    def set_reconcile_interval(self, connection_id: str, seconds: int | None) -> None:
        """How often the connection is read in full to find deletions (None: default)."""
        from worker.errors import UnknownConnection

        with self._write() as tx:
            updated = tx.execute(
                "UPDATE connections SET reconcile_interval_s = ?, updated_at = ? WHERE id = ?",
                (seconds, utc_now(), connection_id),
            ).rowcount
        if not updated:
            raise UnknownConnection(f"unknown connection {connection_id!r}")

    @translated
    def reconcile_intervals(self) -> dict[str, int | None]:
        """Every connection's own reconciliation interval (None: the default)."""
        rows = self._read("SELECT id, reconcile_interval_s FROM connections")
        return {row[0]: (int(row[1]) if row[1] is not None else None) for row in rows}

    @translated
    def last_full_reads(self, connection_id: str) -> dict[str, tuple[str, str | None]]:
        """Per entity type: when its last successful full read ended, and since when
        deletions it found wait for confirmation (None: none held)."""
        rows = self._read(
            "SELECT entity_type, reconciled_at, CASE WHEN held > 0 THEN held_since END "
            "FROM pair_counts WHERE connection_id = ? AND reconciled_at IS NOT NULL",
            (connection_id,),
        )
        return {row[0]: (row[1], row[2]) for row in rows}

    @translated
    def deletions(self, connection_id: str, entity_type: str) -> dict[str, tuple[str, str | None]]:
        """(deleted_at, deleted_by) of every deleted key of one pair."""
        rows = self._read(
            "SELECT key, deleted_at, deleted_by FROM records WHERE connection_id = ? "
            "AND entity_type = ? AND deleted_at IS NOT NULL",
            (connection_id, entity_type),
        )
        return {row[0]: (row[1], row[2]) for row in rows}

    @translated
    def run_changes(self, run_id: str) -> dict[str, int]:
        """What one run changed: created, updated, deleted (by deletedAt), reconciled."""
        rows = self._read(
            "SELECT created, updated, deleted, reconciled FROM runs WHERE id = ?", (run_id,)
        )
        if not rows:
            return {}
        return dict(
            zip(("created", "updated", "deleted", "reconciled"), map(int, rows[0]), strict=True)
        )

    @translated
    def full_read_evidence(self, run_id: str) -> FullReadEvidence | None:
        """What a full run's pages showed of its completeness, and the keys it read.

        Keys read are counted by key: stored ones the run stamped, and
        quarantined keys the store holds no row of (read, but not storable).
        """
        rows = self._read(
            "SELECT connection_id, entity_type, listed_total, keyless, short_pages "
            "FROM runs WHERE id = ?",
            (run_id,),
        )
        if not rows or rows[0][0] is None:
            return None
        connection_id, entity, listed_total, keyless, short_pages = rows[0]
        pair = (connection_id, entity)
        ((stored,),) = self._read(
            "SELECT COUNT(*) FROM records WHERE connection_id = ? AND entity_type = ? "
            "AND seen_by_run = ?",
            (*pair, run_id),
        )
        ((unstored,),) = self._read(
            "SELECT COUNT(DISTINCT q.record_key) FROM quarantine q WHERE q.connection_id = ? "
            "AND q.entity_type = ? AND q.run_id = ? AND q.record_key IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM records r WHERE r.connection_id = q.connection_id "
            "AND r.entity_type = q.entity_type AND r.key = q.record_key)",
            (*pair, run_id),
        )
        return FullReadEvidence(
            listed_total=None if listed_total is None else int(listed_total),
            keys_read=int(stored) + int(unstored),
            keyless=int(keyless),
            short_pages=int(short_pages),
        )

    @translated
    def run_reconciliation(self, run_id: str) -> tuple[int, int, str | None]:
        """A finished full run's (keys marked, keys newly held, verdict in words)."""
        rows = self._read(
            "SELECT reconciled, held, reconcile_note FROM runs WHERE id = ?", (run_id,)
        )
        if not rows:
            return 0, 0, None
        return int(rows[0][0] or 0), int(rows[0][1] or 0), rows[0][2]
