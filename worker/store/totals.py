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
    """Aggregates over every table, for monitoring."""

    @translated
    def totals(self) -> Totals:
        """Add up runs, failures, transitions, events and parked jobs."""
        read = self._read
        run_rows = read(
            "SELECT COALESCE(connection_id, ''), COALESCE(entity_type, ''), status, COUNT(*), "
            "COALESCE(SUM(pages), 0), COALESCE(SUM(records), 0) FROM runs "
            "GROUP BY connection_id, entity_type, status ORDER BY 1, 2, 3"
        )
        totals = [
            RunTotal(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]), int(r[5]))
            for r in run_rows
        ]
        failures = read(
            "SELECT connection_id, entity_type, COALESCE(error_kind, 'unknown'), COUNT(*) "
            "FROM runs WHERE status = 'failed' "
            "AND connection_id IS NOT NULL AND entity_type IS NOT NULL "
            "GROUP BY connection_id, entity_type, error_kind ORDER BY 1, 2, 3"
        )
        transitions = read(
            "SELECT connection_id, COALESCE(entity_type, 'connection'), from_state, to_state, "
            "COUNT(*) FROM transitions GROUP BY connection_id, entity_type, from_state, to_state "
            "ORDER BY 1, 2, 3, 4"
        )
        events = read(
            "SELECT type, status, COUNT(*) FROM events GROUP BY type, status ORDER BY 1, 2"
        )
        parked = read(
            "SELECT connection_id, COUNT(*) FROM parked_jobs GROUP BY connection_id ORDER BY 1"
        )
        return Totals(
            runs=tuple(t for t in totals if t.status in TERMINAL),
            active_runs=tuple(t for t in totals if t.status not in TERMINAL),
            failures=tuple(
                FailureTotal(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in failures
            ),
            transitions=tuple(
                TransitionTotal(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]))
                for r in transitions
            ),
            events=tuple(EventTotal(str(r[0]), str(r[1]), int(r[2])) for r in events),
            parked=tuple((str(r[0]), int(r[1])) for r in parked),
        )
