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
    """Runs of one (connection, entity type) that ended with one status."""

    connection_id: str  # "" for a rejected payload that named no connection
    entity_type: str
    status: str
    runs: int
    pages: int  # upstream list pages fetched and committed by these runs
    records: int  # records written by these runs (a repeated page counts again)


@dataclass(frozen=True)
class FailureTotal:
    """Failed runs of one pair by the kind of the failure."""

    connection_id: str
    entity_type: str
    kind: str
    runs: int


@dataclass(frozen=True)
class TransitionTotal:
    """Breaker state changes of one level from one state to another."""

    connection_id: str
    level: str  # "connection" or an entity type
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
    """What the store's history adds up to."""

    runs: tuple[RunTotal, ...]
    active_runs: tuple[RunTotal, ...]  # queued, running or deferred right now
    failures: tuple[FailureTotal, ...]
    transitions: tuple[TransitionTotal, ...]
    events: tuple[EventTotal, ...]
    parked: tuple[tuple[str, int], ...]  # (connection, jobs parked)


class TotalsStore(StoreBase):
    """Aggregates for monitoring, read from counters: no scan of a table that grows."""

    @translated
    def totals(self) -> Totals:
        """Add up runs, failures, transitions, events and parked jobs.

        Finished runs come from ``run_totals`` plus the few runs housekeeping
        has not folded in yet (``counted = 0``, a partial index); pages and
        records written from ``pair_counts``; transitions from the live rows
        plus those retention deleted. Events and parked jobs are small tables
        (retention keeps the outbox short).
        """
        read = self._read
        by_run: dict[tuple[str, str, str], int] = {}
        by_failure: dict[tuple[str, str, str], int] = {}
        folded = read("SELECT connection_id, entity_type, status, error_kind, runs FROM run_totals")
        fresh = read(
            "SELECT COALESCE(connection_id, ''), COALESCE(entity_type, ''), status, "
            "COALESCE(error_kind, ''), COUNT(*) FROM runs WHERE counted = 0 "
            "GROUP BY connection_id, entity_type, status, error_kind"
        )
        for cid, entity, status, kind, count in (*folded, *fresh):
            key = (str(cid), str(entity), str(status))
            by_run[key] = by_run.get(key, 0) + int(count)
            if status == "failed" and cid and entity:
                fkey = (str(cid), str(entity), str(kind) or "unknown")
                by_failure[fkey] = by_failure.get(fkey, 0) + int(count)
        work = {
            (str(r[0]), str(r[1])): (int(r[2]), int(r[3]))
            for r in read("SELECT connection_id, entity_type, pages, written FROM pair_counts")
        }
        runs: list[RunTotal] = []
        active: list[RunTotal] = []
        for (cid, entity, status), count in sorted(by_run.items()):
            # A pair's pages and records ride on its first status; the metrics
            # sum them over statuses, so where they sit does not matter.
            pages, written = work.pop((cid, entity), (0, 0))
            total = RunTotal(cid, entity, status, count, pages, written)
            (runs if status in TERMINAL else active).append(total)
        for (cid, entity), (pages, written) in sorted(work.items()):
            if pages or written:
                runs.append(RunTotal(cid, entity, "succeeded", 0, pages, written))
        transitions: dict[tuple[str, str, str, str], int] = {}
        for row in (
            *read(
                "SELECT connection_id, level, from_state, to_state, count FROM transition_totals"
            ),
            *read(
                "SELECT connection_id, COALESCE(entity_type, 'connection'), from_state, "
                "to_state, COUNT(*) FROM transitions "
                "GROUP BY connection_id, entity_type, from_state, to_state"
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
            transitions=tuple(
                TransitionTotal(*key, count) for key, count in sorted(transitions.items())
            ),
            events=tuple(EventTotal(str(r[0]), str(r[1]), int(r[2])) for r in events),
            parked=tuple((str(r[0]), int(r[1])) for r in parked),
        )
