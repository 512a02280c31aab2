"""/metrics: the grid and the store's totals, exposed through prometheus_client.

A custom collector computes every value at scrape time from one snapshot of
the store and the breakers (``StoreCollector``), in a CollectorRegistry of its
own: no process-global registry, no counter kept in memory, so the numbers
survive restarts of every process. The store's side is read from counters
(schema version 5), never from a scan of ``records``.
There is no per-request counter anywhere in entity-sync; "requests by outcome"
comes from two honest sources instead: the pages every run fetched and
committed (store, since the beginning) and the calls and failures in each
breaker's one-minute window (Redis, right now).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from worker.dashboard.data import Grid
from worker.store.totals import Totals
from worker.timeutil import parse_instant

# The classic text format (what generate_latest writes), which every scraper reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = Mapping[str, str]


@dataclass
class Family:
    """One metric: its name, type, help line and samples."""

    name: str
    type: str  # counter or gauge
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))

    def metric(self) -> Metric:
        """The prometheus_client family with these samples."""
        names = list(self.samples[0][0]) if self.samples else []
        kind = CounterMetricFamily if self.type == "counter" else GaugeMetricFamily
        metric = kind(self.name, self.help, labels=names)
        for labels, value in self.samples:
            metric.add_metric([labels[name] for name in names], value)
        return metric


class StoreCollector:
    """A prometheus_client collector: one snapshot per scrape, turned into families."""

    def __init__(self, snapshot: Callable[[], tuple[Grid, Totals]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        grid, totals = self._snapshot()
        for family in families(grid, totals):
            yield family.metric()

    def describe(self) -> Iterable[Metric]:
        return ()  # nothing to read at registration; every value comes at scrape time


def registry_for(snapshot: Callable[[], tuple[Grid, Totals]]) -> CollectorRegistry:
    """A registry of its own holding only the store collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(snapshot))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition (format 0.0.4) of everything ``registry`` collects.

    Byte for byte the lines ``generate_latest`` writes for counters and gauges,
    written directly: measured at a third of its time (BENCHMARKS.md, section 6),
    which at 1,000 connections (about 100,000 samples) is most of a scrape.
    """
    out: list[str] = []
    for metric in registry.collect():
        name = metric.name + "_total" if metric.type == "counter" else metric.name
        help_text = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {metric.type}\n")
        for sample in metric.samples:
            if sample.labels:
                inner = ",".join(
                    f'{key}="{_label_value(value)}"' for key, value in sorted(sample.labels.items())
                )
                out.append(f"{sample.name}{{{inner}}} {_number(sample.value)}\n")
            else:
                out.append(f"{sample.name} {_number(sample.value)}\n")
    return "".join(out).encode()


def render_reference(registry: CollectorRegistry) -> bytes:
    """prometheus_client's own exposition of the same registry (tests compare the two)."""
    return generate_latest(registry)


def _number(value: float) -> str:
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def families(grid: Grid, totals: Totals) -> list[Family]:
    """Every metric the dashboard exports."""
    return [*_grid_families(grid), *_store_families(totals)]


def _grid_families(grid: Grid) -> list[Family]:
    redis_up = Family(
        "entity_sync_redis_up", "gauge", "1 when the breakers in Redis could be read."
    )
    redis_up.add(1 if grid.redis_ok else 0)
    state = Family(
        "entity_sync_pair_state",
        "gauge",
        "1 for the current state of each connection and entity type "
        "(healthy, paused, open, half-open, halted, blocked, unknown).",
    )
    lag = Family(
        "entity_sync_freshness_lag_seconds",
        "gauge",
        "Seconds since the pair's last successful run finished "
        "(since the connection was registered when it never succeeded).",
    )
    stale = Family(
        "entity_sync_stale",
        "gauge",
        f"1 when the freshness lag passes {grid.stale_after_intervals} sync intervals.",
    )
    last_success = Family(
        "entity_sync_last_success_timestamp_seconds",
        "gauge",
        "Unix time the pair's last successful run finished (absent: never).",
    )
    records = Family(
        "entity_sync_records_synced", "gauge", "Records held in the store, deletions included."
    )
    deleted = Family("entity_sync_records_deleted", "gauge", "Records deleted upstream.")
    quarantined = Family(
        "entity_sync_records_quarantined", "gauge", "Records that could not be stored."
    )
    interval = Family(
        "entity_sync_sync_interval_seconds", "gauge", "How often each connection should sync."
    )
    for row in grid.connections:
        interval.add(row.interval_s, connection=row.id)
        for cell in row.cells:
            pair = {"connection": cell.connection_id, "entity_type": cell.entity_type}
            state.add(1, **pair, state=cell.state)
            if cell.lag_s is not None:
                lag.add(cell.lag_s, **pair)
            stale.add(1 if cell.stale else 0, **pair)
            if cell.last_success_at:
                last_success.add(parse_instant(cell.last_success_at).timestamp(), **pair)
            records.add(cell.records, **pair)
            deleted.add(cell.deleted, **pair)
            quarantined.add(cell.quarantined, **pair)
    window = Family(
        "entity_sync_breaker_window_requests",
        "gauge",
        "Upstream requests in each breaker level's failure-rate window (the last minute), "
        "by outcome.",
    )
    for level in grid.windows:
        where = {"connection": level.connection_id, "level": level.level}
        window.add(level.calls - level.failures, **where, outcome="success")
        window.add(level.failures, **where, outcome="failure")
    return [
        *(redis_up, state, lag, stale, last_success, interval),
        *(records, deleted, quarantined, window),
    ]


def _store_families(totals: Totals) -> list[Family]:
    runs = Family("entity_sync_runs_total", "counter", "Finished runs by final status.")
    pages = Family(
        "entity_sync_upstream_pages_total",
        "counter",
        "Upstream list pages fetched and committed (successful requests).",
    )
    written = Family(
        "entity_sync_records_written_total",
        "counter",
        "Records written by runs (a page repeated after a crash counts again).",
    )
    for total in totals.runs:
        runs.add(
            total.runs,
            connection=total.connection_id,
            entity_type=total.entity_type,
            status=total.status,
        )
    # Summed over every status: a run's pages move from "running" to its final
    # status, and a counter split by status would go down when they do.
    by_pair: dict[tuple[str, str], tuple[int, int]] = {}
    for total in (*totals.runs, *totals.active_runs):
        key = (total.connection_id, total.entity_type)
        so_far = by_pair.get(key, (0, 0))
        by_pair[key] = (so_far[0] + total.pages, so_far[1] + total.records)
    for (connection_id, entity_type), (page_count, record_count) in sorted(by_pair.items()):
        pages.add(page_count, connection=connection_id, entity_type=entity_type)
        written.add(record_count, connection=connection_id, entity_type=entity_type)
    active = Family(
        "entity_sync_runs_active", "gauge", "Runs queued, running or parked (deferred) now."
    )
    for total in totals.active_runs:
        active.add(
            total.runs,
            connection=total.connection_id,
            entity_type=total.entity_type,
            status=total.status,
        )
    failures = Family(
        "entity_sync_run_failures_total", "counter", "Failed runs by the kind of failure."
    )
    for failure in totals.failures:
        failures.add(
            failure.runs,
            connection=failure.connection_id,
            entity_type=failure.entity_type,
            kind=failure.kind,
        )
    transitions = Family(
        "entity_sync_breaker_transitions_total",
        "counter",
        "Breaker state changes by level (connection or entity type), from and to.",
    )
    for t in totals.transitions:
        labels = {"connection": t.connection_id, "level": t.level, "from": t.from_state}
        transitions.add(t.count, **labels, to=t.to_state)
    events = Family("entity_sync_events", "gauge", "Outbox events by type and delivery status.")
    for e in totals.events:
        events.add(e.count, type=e.type, status=e.status)
    parked = Family(
        "entity_sync_parked_jobs", "gauge", "Sync jobs parked behind a breaker or a pause."
    )
    for connection_id, count in totals.parked:
        parked.add(count, connection=connection_id)
    return [runs, pages, written, active, failures, transitions, events, parked]
