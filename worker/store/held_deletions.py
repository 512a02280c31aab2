"""Deletions a complete read found: applied, or held when they are too many.

A complete full read (``worker/sync/full_read.py`` decides what complete
means) may mark the pair's live keys it did not read as deleted. A partial
source read looks exactly like a mass delete, so a read that would mark more
than the guard allows (``DeletionGuard``: by default more than 10% and more
than 20 of the pair's live records, or every one of them) marks nothing and
holds the set, per key, in ``held_deletions``. A held key is applied when a
later complete read, at least ``confirm_after_s`` after the hold, still misses
it, or when an operator approves the set (``entity-sync deletions approve``);
a key that is read again leaves the set. Keys that a later read newly misses
face the guard on their own.

``reconcile_full_read`` runs inside the transaction that ends the run
(``store/run_end.py``); ``HeldDeletionsStore`` is the operator's side.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from worker.errors import UnknownConnection
from worker.store.base import StoreBase, Tx, translated
from worker.store.models import DeletionGuard, FullReadVerdict
from worker.store.page_write import RECONCILIATION
from worker.timeutil import canonical, parse_instant, utc_now


@dataclass(frozen=True)
class Reconciliation:
    """What a successful full run did about the keys it did not read."""

    complete: bool  # the read proved complete (else nothing was marked)
    marked: int = 0  # keys marked deleted now (confirmed holds included)
    held_now: int = 0  # keys this read newly held
    held: int = 0  # keys held for the pair after it
    note: str | None = None  # why nothing was marked, or what is held


@dataclass(frozen=True)
class HeldSet:
    """One pair's held deletions, as status and the CLI show them."""

    connection_id: str
    entity_type: str
    keys: tuple[str, ...]
    held_since: str | None


def reconcile_full_read(
    tx: Tx,
    *,
    run_id: str,
    connection_id: str,
    entity_type: str,
    started_at: str,
    finished_at: str,
    verdict: FullReadVerdict | None,
) -> Reconciliation:
    """Apply or hold what a successful full run found missing (inside ``tx``)."""
    pair = (connection_id, entity_type)
    held_rows = dict(
        tx.execute(
            "SELECT key, held_at FROM held_deletions WHERE connection_id = ? AND entity_type = ?",
            pair,
        ).fetchall()
    )
    if verdict is None or verdict.incomplete is not None:
        why = verdict.incomplete if verdict is not None else "no proof of a complete read"
        result = Reconciliation(False, held=len(held_rows), note=f"not reconciled: {why}")
        _record(tx, run_id, pair, finished_at, result, _oldest(held_rows.values()))
        return result
    # Live keys this run did not read, and nobody wrote after it began.
    candidates = dict(
        tx.execute(
            "SELECT key, seen_by_run FROM records WHERE connection_id = ? AND entity_type = ? "
            "AND deleted_at IS NULL AND (seen_by_run IS NULL OR seen_by_run <> ?) "
            "AND synced_at < ?",
            (*pair, run_id, started_at),
        ).fetchall()
    )
    came_back = [key for key in held_rows if key not in candidates]
    wait = timedelta(seconds=verdict.guard.confirm_after_s)
    cutoff = canonical(parse_instant(finished_at) - wait)
    confirmed = [key for key, at in held_rows.items() if key in candidates and at <= cutoff]
    waiting = {key: at for key, at in held_rows.items() if key in candidates and at > cutoff}
    fresh = [key for key in candidates if key not in held_rows]
    live = _live(tx, pair)
    guard = _guard_of(tx, connection_id, verdict.guard)
    to_mark = list(confirmed)
    held_now = 0
    note = None
    if fresh and guard.holds(len(fresh), len(candidates), live):
        held_now = len(fresh)
        tx.executemany(
            "INSERT INTO held_deletions (connection_id, entity_type, key, held_at, run_id, "
            "last_seen_run) VALUES (?, ?, ?, ?, ?, ?)",
            [(*pair, key, finished_at, run_id, candidates[key]) for key in fresh],
        )
        waiting.update(dict.fromkeys(fresh, finished_at))
        note = (
            f"{held_now} deletions held: {held_now} of {live} live records would go, more "
            f"than the guard allows ({guard.describe()}); applied when a complete read after "
            f"{_confirm_time(finished_at, guard)} still misses them, or by `entity-sync "
            f"deletions approve {connection_id} --entity {entity_type}`"
        )
    else:
        to_mark.extend(fresh)
        if waiting:
            note = (
                f"{len(waiting)} deletions held since {_oldest(waiting.values())}: "
                "a complete read after the confirmation delay applies them"
            )
    marked = _mark(tx, pair, to_mark, finished_at)
    tx.executemany(
        "DELETE FROM held_deletions WHERE connection_id = ? AND entity_type = ? AND key = ?",
        [(*pair, key) for key in (*came_back, *confirmed)],
    )
    result = Reconciliation(True, marked=marked, held_now=held_now, held=len(waiting), note=note)
    _record(tx, run_id, pair, finished_at, result, _oldest(waiting.values()))
    return result


def _mark(tx: Tx, pair: tuple[str, str], keys: list[str], at: str) -> int:
    """Mark ``keys`` deleted by reconciliation; returns how many were live."""
    marked = 0
    for start in range(0, len(keys), 500):
        batch = keys[start : start + 500]
        marks = ",".join("?" * len(batch))
        marked += int(
            tx.execute(
                "UPDATE records SET deleted_at = ?, deleted_by = ? WHERE connection_id = ? "
                f"AND entity_type = ? AND deleted_at IS NULL AND key IN ({marks})",
                (at, RECONCILIATION, *pair, *batch),
            ).rowcount
        )
    return marked


def _record(
    tx: Tx,
    run_id: str,
    pair: tuple[str, str],
    finished_at: str,
    result: Reconciliation,
    held_since: str | None,
) -> None:
    """The verdict on the run row, the pair's counters (status reads them) and its last
    full read (kept where the pruning of old runs cannot take it)."""
    tx.execute(
        "UPDATE runs SET reconciled = ?, held = ?, reconcile_note = ? WHERE id = ?",
        (result.marked, result.held_now, result.note, run_id),
    )
    tx.execute(
        "INSERT INTO pair_counts (connection_id, entity_type) VALUES (?, ?) "
        "ON CONFLICT (connection_id, entity_type) DO NOTHING",
        pair,
    )
    tx.execute(
        "UPDATE pair_counts SET live = live - ?, deleted = deleted + ?, "
        "reconciled = reconciled + ?, reconciled_at = ?, held = ?, held_since = ?, "
        "reconcile_note = ? WHERE connection_id = ? AND entity_type = ?",
        (
            result.marked,
            result.marked,
            result.marked,
            finished_at,
            result.held,
            held_since,
            result.note,
            *pair,
        ),
    )


def _live(tx: Tx, pair: tuple[str, str]) -> int:
    rows = tx.execute(
        "SELECT live FROM pair_counts WHERE connection_id = ? AND entity_type = ?", pair
    ).fetchall()
    return int(rows[0][0] or 0) if rows else 0


def _guard_of(tx: Tx, connection_id: str, default: DeletionGuard) -> DeletionGuard:
    """The connection's own guard where it set one, else ``default``."""
    rows = tx.execute(
        "SELECT deletion_guard_percent, deletion_guard_min FROM connections WHERE id = ?",
        (connection_id,),
    ).fetchall()
    if not rows:
        return default
    percent, minimum = rows[0]
    return DeletionGuard(
        max_percent=float(percent) if percent is not None else default.max_percent,
        min_records=int(minimum) if minimum is not None else default.min_records,
        confirm_after_s=default.confirm_after_s,
    )


def _oldest(instants: object) -> str | None:
    values = sorted(str(at) for at in instants)  # type: ignore[attr-defined]
    return values[0] if values else None


def _confirm_time(finished_at: str, guard: DeletionGuard) -> str:
    return canonical(parse_instant(finished_at) + timedelta(seconds=guard.confirm_after_s))[:19]


class HeldDeletionsStore(StoreBase):
    """The operator's side: see, approve or discard a pair's held deletions."""

    @translated
    def held_deletions(self, connection_id: str | None = None) -> list[HeldSet]:
        """Every pair's held set (of one connection when given), keys sorted."""
        where, params = ("WHERE connection_id = ?", (connection_id,)) if connection_id else ("", ())
        rows = self._read(
            f"SELECT connection_id, entity_type, key, held_at FROM held_deletions {where} "
            "ORDER BY connection_id, entity_type, key",
            params,
        )
        sets: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for cid, entity, key, at in rows:
            sets.setdefault((cid, entity), []).append((key, at))
        return [
            HeldSet(cid, entity, tuple(k for k, _ in held), min(at for _, at in held))
            for (cid, entity), held in sets.items()
        ]

    @translated
    def approve_held_deletions(self, connection_id: str, entity_type: str) -> tuple[int, int]:
        """Mark the pair's held keys deleted; returns (marked, dropped).

        A key read again since it was held (its ``seen_by_run`` moved on) is
        not marked: it came back, and only leaves the set.
        """
        pair = (connection_id, entity_type)
        now = utc_now()
        with self._write() as tx:
            _known(tx, connection_id)
            rows = tx.execute(
                "SELECT h.key FROM held_deletions h JOIN records r "
                "ON r.connection_id = h.connection_id AND r.entity_type = h.entity_type "
                "AND r.key = h.key WHERE h.connection_id = ? AND h.entity_type = ? "
                "AND r.deleted_at IS NULL AND (r.seen_by_run = h.last_seen_run "
                "OR (r.seen_by_run IS NULL AND h.last_seen_run IS NULL))",
                pair,
            ).fetchall()
            marked = _mark(tx, pair, [row[0] for row in rows], now)
            dropped = _clear(tx, pair)
            tx.execute(
                "UPDATE pair_counts SET live = live - ?, deleted = deleted + ?, "
                "reconciled = reconciled + ?, held = 0, held_since = NULL, reconcile_note = ? "
                "WHERE connection_id = ? AND entity_type = ?",
                (marked, marked, marked, f"{marked} held deletions approved at {now[:19]}", *pair),
            )
        return marked, dropped - marked

    @translated
    def discard_held_deletions(self, connection_id: str, entity_type: str) -> int:
        """Forget the pair's held keys (they stay live); returns how many were held."""
        pair = (connection_id, entity_type)
        with self._write() as tx:
            _known(tx, connection_id)
            dropped = _clear(tx, pair)
            tx.execute(
                "UPDATE pair_counts SET held = 0, held_since = NULL, reconcile_note = ? "
                "WHERE connection_id = ? AND entity_type = ?",
                (f"{dropped} held deletions discarded at {utc_now()[:19]}", *pair),
            )
        return dropped

    @translated
    def deletion_guard(self, connection_id: str) -> tuple[float | None, int | None]:
        """The connection's own (percent, min records); None parts follow the settings."""
        rows = self._read(
            "SELECT deletion_guard_percent, deletion_guard_min FROM connections WHERE id = ?",
            (connection_id,),
        )
        if not rows:
            raise UnknownConnection(f"unknown connection {connection_id!r}")
        percent, minimum = rows[0]
        return (
            None if percent is None else float(percent),
            None if minimum is None else int(minimum),
        )

    @translated
    def set_deletion_guard(
        self, connection_id: str, *, max_percent: float | None, min_records: int | None
    ) -> None:
        """The connection's own guard (None: the setting's default for that part)."""
        with self._write() as tx:
            updated = tx.execute(
                "UPDATE connections SET deletion_guard_percent = ?, deletion_guard_min = ?, "
                "updated_at = ? WHERE id = ?",
                (max_percent, min_records, utc_now(), connection_id),
            ).rowcount
        if not updated:
            raise UnknownConnection(f"unknown connection {connection_id!r}")


def _known(tx: Tx, connection_id: str) -> None:
    if not tx.execute("SELECT 1 FROM connections WHERE id = ?", (connection_id,)).fetchall():
        raise UnknownConnection(f"unknown connection {connection_id!r}")


def _clear(tx: Tx, pair: tuple[str, str]) -> int:
    return int(
        tx.execute(
            "DELETE FROM held_deletions WHERE connection_id = ? AND entity_type = ?", pair
        ).rowcount
    )
