"""Totals over the store's history: runs, pages, transitions, events, parking.

Read-only aggregate queries, one per table, that the dashboard's /metrics
runs at scrape time: the store is the truth (principle 1), so the counters
survive restarts of every process and need no counter of their own in Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.store.base import StoreBase, translated

# A run row becomes terminal once and stays so; only these statuses are
# counted as ever-growing totals (queued, running and deferred come and go).
TERMINAL = ("succeeded", "failed", "skipped", "rejected")


@dataclass(frozen=True)
class RunTotal:
    """Runs of one connection (all its entity types) that ended with one status."""

    connection_id: str  # "" for a rejected payload that named no connection
    status: str
    runs: int


@dataclass(frozen=True)
class FailureTotal:
    """Failed runs of one connection by the kind of the failure."""

    connection_id: str
    kind: str
    runs: int


@dataclass(frozen=True)
class WorkTotal:
    """What the runs of one connection fetched and wrote, since the beginning."""

    connection_id: str
    pages: int  # upstream list pages fetched and committed
    records: int  # records written (a repeated page counts again)


@dataclass(frozen=True)
class TransitionTotal:
    """Breaker state changes of one connection at one level, from one state to another."""

    connection_id: str
    level: str  # "connection", or "entity_type" for its entity types' breakers together
    from_state: str
    to_state: str
    count: int


@dataclass(frozen=True)
class EventTotal:
    """Outbox events of one type in one delivery status."""

    type: str
    status: str
    count: int


@dataclass(frozen=True)
class Totals:
    """What the store's history adds up to, per connection (never per entity type)."""

    runs: tuple[RunTotal, ...]
    active_runs: tuple[RunTotal, ...]  # queued, running or deferred right now
    failures: tuple[FailureTotal, ...]
    work: tuple[WorkTotal, ...]
    transitions: tuple[TransitionTotal, ...]
    events: tuple[EventTotal, ...]
    parked: tuple[tuple[str, int], ...]  # (connection, jobs parked)


# A transition's level, folded to two values: the connection's breaker or one of its
# entity types' (which one is per pair; the dashboard and `transitions` show it).
_TOTAL_LEVEL = "CASE WHEN level = 'connection' THEN 'connection' ELSE 'entity_type' END"
_ROW_LEVEL = "CASE WHEN entity_type IS NULL THEN 'connection' ELSE 'entity_type' END"


class TotalsStore(StoreBase):
    """Aggregates for monitoring, read from counters: no scan of a table that grows."""

    @translated
    def totals(self) -> Totals:
        """Add up runs, failures, work, transitions, events and parked jobs per connection.

        Finished runs come from ``run_totals`` plus the few runs housekeeping
        has not folded in yet (``counted = 0``, a partial index); pages and
        records written from ``pair_counts``; transitions from the live rows
        plus those retention deleted. Events and parked jobs are small tables
        (retention keeps the outbox short). The store adds up per connection,
        so what comes back is a few rows per connection, not per pair.
        """
        read = self._read
        by_run: dict[tuple[str, str], int] = {}
        by_failure: dict[tuple[str, str], int] = {}
        folded = read(
            "SELECT connection_id, status, error_kind, SUM(runs) FROM run_totals "
            "GROUP BY connection_id, status, error_kind"
        )
        fresh = read(
            "SELECT COALESCE(connection_id, ''), status, COALESCE(error_kind, ''), COUNT(*) "
            "FROM runs WHERE counted = 0 GROUP BY connection_id, status, error_kind"
        )
        for cid, status, kind, count in (*folded, *fresh):
            key = (str(cid), str(status))
            by_run[key] = by_run.get(key, 0) + int(count)
            if status == "failed" and cid:
                fkey = (str(cid), str(kind) or "unknown")
                by_failure[fkey] = by_failure.get(fkey, 0) + int(count)
        runs: list[RunTotal] = []
        active: list[RunTotal] = []
        for (cid, status), count in sorted(by_run.items()):
            if count:
                (runs if status in TERMINAL else active).append(RunTotal(cid, status, count))
        work = read(
            "SELECT connection_id, SUM(pages), SUM(written) FROM pair_counts "
            "GROUP BY connection_id ORDER BY connection_id"
        )
        transitions: dict[tuple[str, str, str, str], int] = {}
        for row in (
            *read(
                f"SELECT connection_id, {_TOTAL_LEVEL}, "
                "from_state, to_state, SUM(count) FROM transition_totals GROUP BY 1, 2, 3, 4"
            ),
            *read(
                f"SELECT connection_id, {_ROW_LEVEL}, "
                "from_state, to_state, COUNT(*) FROM transitions GROUP BY 1, 2, 3, 4"
            ),
        ):
            tkey = (str(row[0]), str(row[1]), str(row[2]), str(row[3]))
            transitions[tkey] = transitions.get(tkey, 0) + int(row[4])
        events = read(
            "SELECT type, status, COUNT(*) FROM events GROUP BY type, status ORDER BY 1, 2"
        )
        parked = read(
            "SELECT connection_id, COUNT(*) FROM parked_jobs GROUP BY connection_id ORDER BY 1"
        )
        return Totals(
            runs=tuple(runs),
            active_runs=tuple(active),
            failures=tuple(FailureTotal(*key, count) for key, count in sorted(by_failure.items())),
            work=tuple(WorkTotal(str(r[0]), int(r[1] or 0), int(r[2] or 0)) for r in work),
            transitions=tuple(
                TransitionTotal(*key, count) for key, count in sorted(transitions.items())
            ),
            events=tuple(EventTotal(str(r[0]), str(r[1]), int(r[2])) for r in events),
            parked=tuple((str(r[0]), int(r[1])) for r in parked),
        )
