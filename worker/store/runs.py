"""Runs, records, cursors and quarantine: what a sync writes (``pairs``: what is read
back per pair)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from worker.events import Event
from worker.store import run_end
from worker.store.base import Tx, translated
from worker.store.held_deletions import HeldDeletionsStore
from worker.store.models import (
    FullReadVerdict,
    PageCommit,
    Run,
    RunStatus,
    StoredRecord,
)
from worker.store.page_write import write_page
from worker.store.pair_status import _RUN_COLUMNS, PairStatusStore, _run
from worker.store.schema import LATEST_RUNS
from worker.timeutil import utc_now

_READ_JSON = json.JSONDecoder(parse_int=lambda s: int(s) if len(s) <= 4000 else Decimal(s))


class SyncStore(PairStatusStore, run_end.RunEndStore, HeldDeletionsStore):
    """The run history and the synced data of every (connection, entity type)."""

    # -- runs --------------------------------------------------------------------

    @translated
    def start_run(self, run: Run) -> None:
        """Record a run as started; a full run forgets the cursor in the same step."""
        with self._write() as tx:
            _insert_run(tx, run)
            _forget_cursor_if_full(tx, run)

    @translated
    def queue_runs(self, runs: Sequence[Run]) -> None:
        """Record the runs a fan-out is about to send (status queued), in one step.

        A queued run whose message the broker loses is found by
        ``stalled_runs`` and sent again; a message never recorded could not be.
        """
        with self._write() as tx:
            for run in runs:
                _insert_run(tx, run)

    @translated
    def skip_queued_run(self, run_id: str, *, coalesced_into: str, message: str) -> bool:
        """Close a queued run as skipped (its pair was busy); False if it was not queued."""
        with self._write() as tx:
            skipped: int = tx.execute(
                "UPDATE runs SET status = 'skipped', finished_at = ?, coalesced_into = ?, "
                "error_message = ? WHERE id = ? AND status = 'queued'",
                (utc_now(), coalesced_into, message, run_id),
            ).rowcount
            if skipped:
                refresh_latest_of_run(tx, run_id)
        return skipped == 1

    @translated
    def record_run(self, run: Run) -> None:
        """Record a run that is already over (skipped, rejected) in one step."""
        with self._write() as tx:
            _insert_run(tx, run)

    @translated
    def touch_run(self, run_id: str, connection_id: str, entity_type: str) -> None:
        """A task starts work on this run: count it, and start it if it was queued or
        parked. A full run that was queued forgets the cursor as it starts."""
        with self._write() as tx:
            tx.execute(
                "DELETE FROM cursors WHERE connection_id = ? AND entity_type = ? AND EXISTS "
                "(SELECT 1 FROM runs WHERE id = ? AND status = 'queued' AND is_full = ?)",
                (connection_id, entity_type, run_id, True),
            )
            tx.execute(
                "UPDATE runs SET tasks = tasks + 1, heartbeat_at = ?, status = CASE "
                "WHEN status IN ('queued', 'deferred') THEN 'running' ELSE status END "
                "WHERE id = ?",
                (utc_now(), run_id),
            )
            tx.execute(
                "DELETE FROM parked_jobs WHERE connection_id = ? AND entity_type = ? "
                "AND run_id = ?",
                (connection_id, entity_type, run_id),
            )

    @translated
    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        error_kind: str | None = None,
        error_message: str | None = None,
        verdict: FullReadVerdict | None = None,
    ) -> Event | None:
        """Close a run with its outcome (only a run that is still open).

        In the same transaction a successful full run whose ``verdict`` proves
        its read complete marks the keys it did not read as deleted (or holds
        them: ``store/held_deletions.py``), and the run's sync.* event is
        written when its connection asked for it (``store/run_end.py``);
        that event is returned.
        """
        with self._write() as tx:
            ended = tx.execute(
                "UPDATE runs SET status = ?, finished_at = ?, error_kind = ?, error_message = ? "
                "WHERE id = ? AND status IN ('queued', 'running', 'deferred')",
                (status.value, utc_now(), error_kind, error_message, run_id),
            ).rowcount
            if ended:
                refresh_latest_of_run(tx, run_id)
            return run_end.on_run_end(tx, run_id, status, verdict) if ended else None

    @translated
    def get_run(self, run_id: str) -> Run | None:
        """One run by id."""
        rows = self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        return _run(rows[0]) if rows else None

    @translated
    def runs_for_request(self, request_id: str) -> list[Run]:
        """Every run started for one sync request, oldest first."""
        rows = self._read(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE request_id = ? ORDER BY started_at",
            (request_id,),
        )
        return [_run(row) for row in rows]

    @translated
    def recent_runs(self, *, limit: int = 50, status: str | None = None) -> list[Run]:
        """The newest runs, optionally of one status."""
        where = "WHERE status = ?" if status else ""
        params: tuple[Any, ...] = (status, limit) if status else (limit,)
        rows = self._read(
            f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY started_at DESC LIMIT ?", params
        )
        return [_run(row) for row in rows]

    @translated
    def stalled_runs(self, *, quiet_since: str, limit: int) -> list[Run]:
        """Runs queued or running whose last sign of life is older than ``quiet_since``."""
        rows = self._read(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE status IN ('queued', 'running') "
            "AND COALESCE(heartbeat_at, started_at) < ? ORDER BY started_at LIMIT ?",
            (quiet_since, limit),
        )
        return [_run(row) for row in rows]

    @translated
    def claim_stalled_run(self, run_id: str, *, quiet_since: str) -> bool:
        """Count one recovery of a stalled run; False if it moved or another sender took it."""
        with self._write() as tx:
            claimed: int = tx.execute(
                "UPDATE runs SET heartbeat_at = ?, recoveries = recoveries + 1 "
                "WHERE id = ? AND status IN ('queued', 'running') "
                "AND COALESCE(heartbeat_at, started_at) < ?",
                (utc_now(), run_id, quiet_since),
            ).rowcount
        return claimed == 1

    # -- records and cursors -----------------------------------------------------

    @translated
    def commit_page(self, commit: PageCommit) -> None:
        """Store a page's records, quarantine, cursor and run progress atomically."""
        with self._write() as tx:
            write_page(tx, commit, utc_now())

    @translated
    def busy_connections(self, *, started_after: str) -> set[str]:
        """Connections with a run still going (queued, running or parked) begun after a time.

        The cut-off keeps a run whose last task was lost (a flushed broker)
        from blocking its connection's schedule for ever.
        """
        rows = self._read(
            "SELECT DISTINCT connection_id FROM runs "
            "WHERE status IN ('queued', 'running', 'deferred') "
            "AND started_at > ?",
            (started_after,),
        )
        return {row[0] for row in rows if row[0]}

    @translated
    def get_cursor(self, connection_id: str, entity_type: str) -> str | None:
        """The inclusive lower bound the next page request starts from."""
        rows = self._read(
            "SELECT since FROM cursors WHERE connection_id = ? AND entity_type = ?",
            (connection_id, entity_type),
        )
        return rows[0][0] if rows else None

    @translated
    def records(self, connection_id: str, entity_type: str) -> list[StoredRecord]:
        """Every stored record of one pair, deleted ones included, by key."""
        rows = self._read(
            # As text, read here: jsonb's own loader fails on integers of 4,300+ digits.
            "SELECT key, CAST(data AS TEXT), source_updated_at, deleted_at, synced_at, raw "
            "FROM records "
            "WHERE connection_id = ? AND entity_type = ? ORDER BY key",
            (connection_id, entity_type),
        )
        return [
            StoredRecord(
                key=row[0],
                data=_READ_JSON.decode(row[1]),
                updated_at=row[2],
                deleted_at=row[3],
                synced_at=row[4],
                raw=row[5],
            )
            for row in rows
        ]

    @translated
    def quarantined(self, connection_id: str, entity_type: str) -> list[tuple[str | None, str]]:
        """(record key, reason) of every quarantined record of one pair."""
        rows = self._read(
            "SELECT record_key, reason FROM quarantine WHERE connection_id = ? "
            "AND entity_type = ? ORDER BY first_seen_at",
            (connection_id, entity_type),
        )
        return [(row[0], row[1]) for row in rows]


_OPEN_PAIR_COUNTS = """
INSERT INTO pair_counts (connection_id, entity_type) VALUES (?, ?)
ON CONFLICT (connection_id, entity_type) DO NOTHING
"""


def _insert_run(tx: Tx, run: Run) -> None:
    _insert_run_row(tx, run)
    if run.connection_id and run.entity_type:
        tx.execute(_OPEN_PAIR_COUNTS, (run.connection_id, run.entity_type))
        _refresh_latest(tx, run.connection_id, run.entity_type)


def _refresh_latest(tx: Tx, connection_id: str, entity_type: str) -> None:
    """Point the pair's counters at its latest run and latest success again.

    Called in the transaction of every change that can move either (a run
    recorded, finished or skipped): two lookups through runs_by_pair.
    """
    tx.execute(
        f"UPDATE pair_counts SET {LATEST_RUNS} WHERE connection_id = ? AND entity_type = ?",
        (connection_id, entity_type),
    )


def refresh_latest_of_run(tx: Tx, run_id: str) -> None:
    """``_refresh_latest`` for the pair of run ``run_id`` (nothing for a pairless run)."""
    row = tx.execute(
        "SELECT connection_id, entity_type FROM runs WHERE id = ?", (run_id,)
    ).fetchone()
    if row is not None and row[0] is not None and row[1] is not None:
        _refresh_latest(tx, str(row[0]), str(row[1]))


def _insert_run_row(tx: Tx, run: Run) -> None:
    tx.execute(
        f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            run.id,
            run.connection_id,
            run.entity_type,
            run.status,
            run.started_at,
            run.request_id,
            run.trigger,
            run.full,
            run.finished_at,
            run.pages,
            run.records,
            run.quarantined,
            run.tasks,
            run.error_kind,
            run.error_message,
            run.coalesced_into,
            run.heartbeat_at,
            run.queue,
            run.recoveries,
        ),
    )


def _forget_cursor_if_full(tx: Tx, run: Run) -> None:
    """A full run reads everything again: it starts without a cursor."""
    if run.full and run.connection_id and run.entity_type:
        tx.execute(
            "DELETE FROM cursors WHERE connection_id = ? AND entity_type = ?",
            (run.connection_id, run.entity_type),
        )
