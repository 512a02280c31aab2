"""What a run changed, deletions found by a complete read, and the run's sync.* event.

A source that deletes for real just stops listing a key. Only a complete read
can tell: a run that read the whole entity type from scratch (a full run) and
succeeded marks every live key it did not read as deleted (``deleted_by`` =
'reconciliation'), in the transaction that ends it. Two marks keep it honest:

- ``records.seen_by_run``: every page commit stamps the keys it read
  (quarantined ones included: the source still has them) with the run's id;
- the run's ``started_at``: a key written after the run began (by anyone) is
  kept, whether or not this run read it.

A failed run, or one still going, marks nothing; nor does an incremental
run, which reads only what changed. Times are the workers' clocks, like every
instant in the store: a key another worker wrote just after the read began,
on a clock running behind by more than that, could be marked; it comes back
live on its next read.

The page's stamps are written with its records (``store/page_write.py``);
``on_run_end`` takes the caller's transaction, inside ``SyncStore.finish_run``.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.store.base import StoreBase, Tx, translated
from worker.store.models import Event, RunStatus
from worker.store.page_write import RECONCILIATION
from worker.timeutil import utc_now


def on_run_end(tx: Tx, run_id: str, status: RunStatus) -> Event | None:
    """A run has just ended with ``status``: reconcile after a successful full read,
    and write its sync.* event when its connection asked for it."""
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
    reconciled = 0
    if status is RunStatus.SUCCEEDED and bool(full):
        reconciled = int(
            tx.execute(
                "UPDATE records SET deleted_at = ?, deleted_by = ? "
                "WHERE connection_id = ? AND entity_type = ? AND deleted_at IS NULL "
                "AND (seen_by_run IS NULL OR seen_by_run <> ?) AND synced_at < ?",
                (finished_at, RECONCILIATION, connection_id, entity, run_id, started_at),
            ).rowcount
        )
        if reconciled:
            tx.execute("UPDATE runs SET reconciled = ? WHERE id = ?", (reconciled, run_id))
        # The pair's counters follow (schema 5's pair_counts), and its last
        # reconciliation is kept where the pruning of old runs cannot take it.
        tx.execute(
            "INSERT INTO pair_counts (connection_id, entity_type) VALUES (?, ?) "
            "ON CONFLICT (connection_id, entity_type) DO NOTHING",
            (connection_id, entity),
        )
        tx.execute(
            "UPDATE pair_counts SET live = live - ?, deleted = deleted + ?, "
            "reconciled = reconciled + ?, reconciled_at = ? "
            "WHERE connection_id = ? AND entity_type = ?",
            (reconciled, reconciled, reconciled, finished_at, connection_id, entity),
        )
    if status not in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        return None
    wanted = tx.execute(
        "SELECT webhook_events FROM connections WHERE id = ?", (connection_id,)
    ).fetchall()
    from worker.outbox.events import EventType, RunSummary, build_run_event

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
            reconciled=reconciled,
            quarantined=int(quarantined),
            pages=int(pages),
            cursor=cursor[0][0] if cursor else None,
            error_kind=error_kind,
            error_message=error_message,
        )
    )
    from worker.store.outbox import insert_event

    insert_event(tx, event)
    return event


def split_events(value: str | None) -> list[str]:
    """The stored comma-separated event types as a list."""
    return [part for part in (value or "").split(",") if part]


class ReconcileStore(StoreBase):
    """Per-connection settings of the opt-in events and the periodic reconciliation."""

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
    def last_full_reads(self, connection_id: str) -> dict[str, str]:
        """Per entity type, when its last successful full read (reconciliation) ended."""
        rows = self._read(
            "SELECT entity_type, reconciled_at FROM pair_counts WHERE connection_id = ? "
            "AND reconciled_at IS NOT NULL",
            (connection_id,),
        )
        return {row[0]: row[1] for row in rows}

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
    def reconciliation_counts(
        self, connection_id: str | None = None
    ) -> dict[tuple[str, str], tuple[int, str | None]]:
        """Per (connection, entity type): keys deleted by reconciliation now, and the
        end of the last successful full read (from the pair counters: no scan)."""
        where, params = ("WHERE connection_id = ?", (connection_id,)) if connection_id else ("", ())
        rows = self._read(
            "SELECT connection_id, entity_type, reconciled, reconciled_at "
            f"FROM pair_counts {where}",
            params,
        )
        return {(row[0], row[1]): (int(row[2] or 0), row[3]) for row in rows}
