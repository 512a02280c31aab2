"""Retention: fold finished runs into counters, then prune old history in small batches.

Every batch is its own short transaction over at most ``batch`` rows picked
through an index, so a prune never holds a table-wide lock and a worker
committing pages waits at most for one batch. What is still live is never
deleted:

- runs: queued, running and deferred runs; each pair's latest run that is not
  ``skipped`` (the "last run" of ``status``) and its latest succeeded run
  (the freshness lag); runs not yet folded into ``run_totals``;
- transitions: each subject's (connection, or connection and entity type)
  latest one, and a connection's own transitions since its last ``closed``
  (``unhealthy_since`` reads back to it);
- events: pending ones (whatever their age), and each subject's latest event
  (the outbox skips an event that repeats it); dead events are kept for their
  own, longer, period;
- schedule_log: only history (the claim lives in ``connections.last_slot``).

The webhooks the unified API sent (upstream_events, upstream_aspects) are
pruned by ``InboundStore.prune_upstream`` (worker/store/inbound.py), whose
bounds follow the receiver's freshness window.

Deleted transitions are added to ``transition_totals`` in the same
transaction, so ``entity_sync_breaker_transitions_total`` never goes down.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.store.base import StoreBase, Tx, translated

TERMINAL_SQL = "('succeeded', 'failed', 'skipped', 'rejected')"

_FOLD_RUNS = f"""
UPDATE runs SET counted = 1
WHERE counted = 0 AND id IN (
    SELECT id FROM runs WHERE counted = 0 AND status IN {TERMINAL_SQL} LIMIT ?
)
RETURNING COALESCE(connection_id, ''), COALESCE(entity_type, ''), status,
    COALESCE(error_kind, '')
"""

_ADD_RUN_TOTAL = """
INSERT INTO run_totals (connection_id, entity_type, status, error_kind, runs)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (connection_id, entity_type, status, error_kind) DO UPDATE SET
    runs = run_totals.runs + excluded.runs
"""

_PRUNE_RUNS = f"""
DELETE FROM runs WHERE id IN (
    SELECT r.id FROM runs r
    WHERE r.finished_at < ? AND r.counted = 1 AND r.status IN {TERMINAL_SQL}
    AND (r.connection_id IS NULL OR r.entity_type IS NULL OR (
        r.id <> COALESCE((
            SELECT x.id FROM runs x WHERE x.connection_id = r.connection_id
            AND x.entity_type = r.entity_type AND x.status <> 'skipped'
            ORDER BY x.started_at DESC LIMIT 1), '')
        AND r.id <> COALESCE((
            SELECT x.id FROM runs x WHERE x.connection_id = r.connection_id
            AND x.entity_type = r.entity_type AND x.status = 'succeeded'
            ORDER BY x.started_at DESC LIMIT 1), '')
    ))
    LIMIT ?
)
"""

_PRUNE_TRANSITIONS = """
DELETE FROM transitions WHERE id IN (
    SELECT t.id FROM transitions t
    WHERE t.at < ?
    AND t.id < (
        SELECT MAX(x.id) FROM transitions x WHERE x.connection_id = t.connection_id
        AND COALESCE(x.entity_type, '') = COALESCE(t.entity_type, ''))
    AND (t.entity_type IS NOT NULL OR EXISTS (
        SELECT 1 FROM transitions c WHERE c.connection_id = t.connection_id
        AND c.entity_type IS NULL AND c.to_state = 'closed' AND c.id > t.id))
    LIMIT ?
)
RETURNING connection_id, COALESCE(entity_type, 'connection'), from_state, to_state
"""

_ADD_TRANSITION_TOTAL = """
INSERT INTO transition_totals (connection_id, level, from_state, to_state, count)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (connection_id, level, from_state, to_state) DO UPDATE SET
    count = transition_totals.count + excluded.count
"""

_PRUNE_EVENTS = """
DELETE FROM events WHERE seq IN (
    SELECT e.seq FROM events e
    WHERE e.status = ? AND e.created_at < ?
    AND e.seq < (
        SELECT MAX(x.seq) FROM events x WHERE x.connection_id = e.connection_id
        AND COALESCE(x.entity_type, '') = COALESCE(e.entity_type, ''))
    LIMIT ?
)
"""

_PRUNE_SCHEDULE_LOG = """
DELETE FROM schedule_log WHERE (connection_id, slot) IN (
    SELECT connection_id, slot FROM schedule_log WHERE at < ? LIMIT ?
)
"""


@dataclass(frozen=True)
class Pruned:
    """Rows one prune deleted, per table, and whether it stopped with more to do."""

    runs: int = 0
    transitions: int = 0
    events: int = 0
    dead_events: int = 0
    schedule_log: int = 0
    upstream_events: int = 0
    more: bool = False  # a table still had a full batch left when the budget ran out

    @property
    def total(self) -> int:
        return (
            self.runs
            + self.transitions
            + self.events
            + self.dead_events
            + self.schedule_log
            + self.upstream_events
        )


class RetentionStore(StoreBase):
    """Folds finished runs into counters and deletes history past its age."""

    @translated
    def fold_runs(self, *, batch: int = 5000, max_batches: int = 20) -> int:
        """Add finished runs to ``run_totals`` (and mark them counted); returns how many."""
        folded = 0
        for _ in range(max_batches):
            with self._write() as tx:
                rows = tx.execute(_FOLD_RUNS, (batch,)).fetchall()
                grouped: dict[tuple[str, str, str, str], int] = {}
                for row in rows:
                    key = (str(row[0]), str(row[1]), str(row[2]), str(row[3]))
                    grouped[key] = grouped.get(key, 0) + 1
                tx.executemany(
                    _ADD_RUN_TOTAL, [(*key, count) for key, count in sorted(grouped.items())]
                )
            folded += len(rows)
            if len(rows) < batch:
                break
        return folded

    @translated
    def prune_history(
        self,
        *,
        before: str,
        dead_before: str,
        batch: int = 1000,
        max_batches: int = 50,
    ) -> Pruned:
        """Delete history older than ``before`` (dead events: ``dead_before``).

        At most ``max_batches`` transactions of ``batch`` rows per table; what
        is left is for the next call (``Pruned.more``).
        """
        counts: dict[str, int] = {}
        more = False
        jobs: list[tuple[str, str, tuple[object, ...]]] = [
            ("runs", _PRUNE_RUNS, (before,)),
            ("transitions", _PRUNE_TRANSITIONS, (before,)),
            ("events", _PRUNE_EVENTS, ("delivered", before)),
            ("dead_events", _PRUNE_EVENTS, ("dead", dead_before)),
            ("schedule_log", _PRUNE_SCHEDULE_LOG, (before,)),
        ]
        for name, statement, params in jobs:
            deleted = 0
            for _ in range(max_batches):
                with self._write() as tx:
                    cursor = tx.execute(statement, (*params, batch))
                    if name == "transitions":
                        gone = cursor.fetchall()
                        _fold_transitions(tx, gone)
                        step = len(gone)
                    else:
                        step = int(cursor.rowcount)
                deleted += step
                if step < batch:
                    break
            else:
                more = True
            counts[name] = counts.get(name, 0) + deleted
        return Pruned(**counts, more=more)


def _fold_transitions(tx: Tx, rows: list[tuple[object, ...]]) -> None:
    grouped: dict[tuple[str, str, str, str], int] = {}
    for row in rows:
        key = (str(row[0]), str(row[1]), str(row[2]), str(row[3]))
        grouped[key] = grouped.get(key, 0) + 1
    tx.executemany(_ADD_TRANSITION_TOTAL, [(*key, count) for key, count in sorted(grouped.items())])
