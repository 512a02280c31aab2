"""/metrics: the grid and the store's totals, exposed through prometheus_client.

A custom collector computes every value at scrape time from one snapshot of
the store and the breakers (``StoreCollector``), in a CollectorRegistry of its
own: no process-global registry, no counter kept in memory, so the numbers
survive restarts of every process. The store's side is read from counters
(schema versions 5 and 9), never from a scan of ``records``.

Series are per (connection, entity type) only where the answer is per pair:
its breaker state, freshness lag and record counts. Everything else is per
connection (runs, failures, pages, breaker window and transitions, parked
jobs) or global (pairs by state, events), and a per-pair count that is zero
(deleted, quarantined) is left out. At 1,000 connections of 8 entity types
that is about 38,000 samples instead of 97,000 (docs/operating.md, "Metrics").

There is no per-request counter anywhere in entity-sync; "requests by outcome"
comes from two honest sources instead: the pages every run fetched and
committed (store, since the beginning) and the calls and failures in each
connection breaker's one-minute window (Redis, right now).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from worker.ops.dashboard.data import STATES, Grid
from worker.store.totals import Totals

# The classic text format (what generate_latest writes), which every scraper reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

PAIR = ("connection", "entity_type")


@dataclass
class Family:
    """One metric: its name, type, help line, label names and samples (label values)."""

    name: str
    type: str  # counter or gauge
    help: str
    labels: tuple[str, ...] = ()
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def add(self, value: float, *values: str) -> None:
        """One sample; ``values`` in the order of ``labels``."""
        self.samples.append((values, value))

    def metric(self) -> Metric:
        """The prometheus_client family with these samples."""
        kind = CounterMetricFamily if self.type == "counter" else GaugeMetricFamily
        metric = kind(self.name, self.help, labels=list(self.labels))
        for values, value in self.samples:
            metric.add_metric(list(values), value)
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


def render(fams: Iterable[Family]) -> bytes:
    """The text exposition (format 0.0.4) of ``fams``, what /metrics serves.

    Byte for byte what ``generate_latest`` writes for the same families through
    the collector (tests compare the two), written straight from the label
    values: one format per family, label values escaped once each, no
    prometheus_client objects per sample, which at 1,000 connections is most
    of the difference between a scrape under 50 ms and one of 100 ms or more.
    """
    out: list[str] = []
    for fam in fams:
        name = fam.name
        if fam.type == "counter" and not name.endswith("_total"):
            name += "_total"  # what a counter's samples are called, header included
        help_text = fam.help.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {fam.type}\n")
        if not fam.labels:
            out.extend(f"{name} {_number(value)}\n" for _, value in fam.samples)
            continue
        # Label names in sorted order, as generate_latest writes them; values go in by %.
        order = sorted(range(len(fam.labels)), key=fam.labels.__getitem__)
        line = name + "{" + ",".join(f'{fam.labels[i]}="%s"' for i in order) + "} %s\n"
        samples: Iterable[tuple[tuple[str, ...], float]] = fam.samples
        if order != list(range(len(order))):
            samples = [(tuple(values[i] for i in order), value) for values, value in samples]
        # One look at every value for a character to escape; nearly always there is none.
        blob = "".join(["".join(values) for values, _ in fam.samples])
        if '"' in blob or "\\" in blob or "\n" in blob:
            samples = [(tuple(map(_label_value, values)), value) for values, value in samples]
        add, number = out.append, _number
        for values, value in samples:
            if value.__class__ is int and 0 <= value < 1_000_000:  # most values: no call
                add(line % (*values, f"{value}.0"))
            else:
                add(line % (*values, number(value)))
    return "".join(out).encode()


def render_reference(registry: CollectorRegistry) -> bytes:
    """prometheus_client's own exposition of the same registry (tests compare the two)."""
    return generate_latest(registry)


def _number(value: float) -> str:
    # floatToGoString's answer, without its checks, for the usual small values.
    if value.__class__ is int and 0 <= value < 1_000_000:
        return f"{value}.0"
    if value.__class__ is float and 0 <= value < 1_000_000:
        return repr(value)
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def families(grid: Grid, totals: Totals) -> list[Family]:
    """Every metric the dashboard exports (the table in docs/operating.md, "Metrics")."""
    return [*_grid_families(grid), *_store_families(totals)]


def _grid_families(grid: Grid) -> list[Family]:
    redis_up = Family(
        "entity_sync_redis_up", "gauge", "1 when the breakers in Redis could be read."
    )
    redis_up.add(1 if grid.redis_ok else 0)
    pairs = Family(
        "entity_sync_pairs",
        "gauge",
        "(Connection, entity type) pairs by state; stale counts the pairs whose freshness "
        f"lag passes {grid.stale_after_intervals} sync intervals, whatever their state.",
        ("state",),
    )
    state = Family(
        "entity_sync_pair_state",
        "gauge",
        "1 for the current state of each connection and entity type "
        "(healthy, paused, open, half-open, halted, blocked, unknown); no other state "
        "is written.",
        (*PAIR, "state"),
    )
    lag = Family(
        "entity_sync_freshness_lag_seconds",
        "gauge",
        "Seconds since the pair's last successful run finished "
        "(since the connection was registered when it never succeeded).",
        PAIR,
    )
    records = Family(
        "entity_sync_records",
        "gauge",
        "Records of each pair in the store: live, deleted upstream (kept as tombstones) "
        "and quarantined (could not be stored); a zero deleted or quarantined count is "
        "not written.",
        (*PAIR, "status"),
    )
    held = Family(
        "entity_sync_held_deletions",
        "gauge",
        "Deletions a complete read found but holds for confirmation (more than the "
        "mass-deletion guard applies on one read's word); pairs without any are not written.",
        PAIR,
    )
    interval = Family(
        "entity_sync_sync_interval_seconds",
        "gauge",
        "How often each connection should sync.",
        ("connection",),
    )
    counts = dict.fromkeys(STATES, 0) | {"stale": 0}
    # The per-pair loop runs 8,000 times at 1,000 connections: appends, no calls.
    add_state, add_lag, add_records = (
        state.samples.append,
        lag.samples.append,
        records.samples.append,
    )
    for row in grid.connections:
        interval.add(row.interval_s, row.id)
        for cell in row.cells:
            cid, entity = cell.connection_id, cell.entity_type
            counts[cell.state] += 1
            counts["stale"] += cell.stale
            add_state(((cid, entity, cell.state), 1))
            if cell.lag_s is not None:
                add_lag(((cid, entity), cell.lag_s))
            add_records(((cid, entity, "live"), cell.records - cell.deleted))
            if cell.deleted:
                add_records(((cid, entity, "deleted"), cell.deleted))
            if cell.quarantined:
                add_records(((cid, entity, "quarantined"), cell.quarantined))
            if cell.held_deletions:
                held.add(cell.held_deletions, cid, entity)
    for name, count in counts.items():
        pairs.add(count, name)
    window = Family(
        "entity_sync_breaker_window_requests",
        "gauge",
        "Upstream requests of each connection in its breaker's failure-rate window "
        "(the last minute), by outcome; connections without a request in it are left out.",
        ("connection", "outcome"),
    )
    for level in grid.windows:
        if level.calls:
            window.add(level.calls - level.failures, level.connection_id, "success")
            window.add(level.failures, level.connection_id, "failure")
    return [redis_up, pairs, state, lag, records, held, interval, window]


def _store_families(totals: Totals) -> list[Family]:
    runs = Family(
        "entity_sync_runs_total",
        "counter",
        "Finished runs of each connection by final status.",
        ("connection", "status"),
    )
    for total in totals.runs:
        runs.add(total.runs, total.connection_id, total.status)
    active = Family(
        "entity_sync_runs_active",
        "gauge",
        "Runs of each connection queued, running or parked (deferred) now; zero is not written.",
        ("connection", "status"),
    )
    for total in totals.active_runs:
        active.add(total.runs, total.connection_id, total.status)
    failures = Family(
        "entity_sync_run_failures_total",
        "counter",
        "Failed runs of each connection by the kind of failure.",
        ("connection", "kind"),
    )
    for failure in totals.failures:
        failures.add(failure.runs, failure.connection_id, failure.kind)
    pages = Family(
        "entity_sync_upstream_pages_total",
        "counter",
        "Upstream list pages each connection fetched and committed (successful requests).",
        ("connection",),
    )
    written = Family(
        "entity_sync_records_written_total",
        "counter",
        "Records each connection's runs wrote (a page repeated after a crash counts again).",
        ("connection",),
    )
    for work in totals.work:
        pages.add(work.pages, work.connection_id)
        written.add(work.records, work.connection_id)
    transitions = Family(
        "entity_sync_breaker_transitions_total",
        "counter",
        "Breaker state changes of each connection by level (its connection breaker, or "
        "any of its entity types' breakers), from and to.",
        ("connection", "level", "from", "to"),
    )
    for t in totals.transitions:
        transitions.add(t.count, t.connection_id, t.level, t.from_state, t.to_state)
    events = Family(
        "entity_sync_events",
        "gauge",
        "Outbox events by type and delivery status.",
        ("type", "status"),
    )
    for e in totals.events:
        events.add(e.count, e.type, e.status)
    parked = Family(
        "entity_sync_parked_jobs",
        "gauge",
        "Sync jobs of each connection parked behind a breaker or a pause; zero is not written.",
        ("connection",),
    )
    for connection_id, count in totals.parked:
        parked.add(count, connection_id)
    return [runs, active, failures, pages, written, transitions, events, parked]
