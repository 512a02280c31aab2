"""1. Throughput against the limit: plain httpx vs entity-sync, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.common import (
    DATA_END,
    BenchEnv,
    SyncOutcome,
    fresh_store,
    median,
    say,
    start_beat,
    start_worker,
    timed_sync,
)
from bench.limit_fetch import fetch_pages
from bench.record_floor import REPEATS, Floor
from bench.record_floor import measure as measure_floor
from bench.report import Section, Table
from harness.testing.sandbox import SandboxHandle, running_sandbox
from worker.store import SqlStore

ENTITY_TYPES = ("assets", "work-orders", "materials", "users")


@dataclass(frozen=True)
class Shape:
    connections: int
    entity_types: tuple[str, ...]
    records: int  # per entity type
    per_page: int = 100
    latency_ms: float = 0.0

    @property
    def total(self) -> int:
        return self.connections * len(self.entity_types) * self.records

    @property
    def pages(self) -> int:
        return self.connections * len(self.entity_types) * -(-self.records // self.per_page)

    def token(self, i: int) -> str:
        return f"tp-{i:03d}"

    def register(self, env: BenchEnv, store: SqlStore, prefix: str = "c") -> list[str]:
        """Add one connection per sandbox token to ``store``; their ids, in token order."""
        ids = [f"{prefix}{i:03d}" for i in range(self.connections)]
        env.add_connections(
            store, [(cid, self.token(i), self.entity_types) for i, cid in enumerate(ids)]
        )
        return ids

    def page_list(self) -> list[tuple[str, str, int]]:
        """Every (token, entity type, page number) of the data set."""
        return [
            (self.token(i), entity, page)
            for i in range(self.connections)
            for entity in self.entity_types
            for page in range(1, -(-self.records // self.per_page) + 1)
        ]

    def config(self) -> dict[str, Any]:
        return {
            "data_end": DATA_END,
            "connections": {
                self.token(i): {
                    "seed": 100 + i,
                    "sizes": dict.fromkeys(self.entity_types, self.records),
                    "default_size": 0,
                    # The spec's own latency_ms is not applied by the sandbox (reported);
                    # the documented `slow` scenario is.
                    "scenarios": [
                        {"name": "slow", "latency_ms": self.latency_ms, "lists_only": True}
                    ]
                    if self.latency_ms
                    else [],
                }
                for i in range(self.connections)
            },
        }


def traced_shape(*, quick: bool) -> Shape:
    """The data set of the instrumented runs (profile, Redis cost): small enough to trace."""
    if quick:
        return Shape(connections=2, entity_types=ENTITY_TYPES[:2], records=1_000)
    return Shape(connections=4, entity_types=ENTITY_TYPES, records=2_500)


@dataclass
class LimitOutcome:
    seconds: float
    records: int
    cpu_s: float
    pages: int


def warm(sandbox: SandboxHandle, tokens: list[str], entity_types: tuple[str, ...]) -> None:
    """Make the sandbox generate every list before anything is timed."""
    for token in tokens:
        with sandbox.api(token, timeout=600) as api:
            for entity in entity_types:
                api.get(f"/api/eam/{entity}", params={"per_page": 1}).raise_for_status()


def limit_run(url: str, shape: Shape, concurrency: int) -> LimitOutcome:
    """The limit: fetch every page at the same concurrency, parse the JSON, nothing else."""
    started: list[float] = []

    def start_clocks() -> None:
        started.extend((time.process_time(), time.perf_counter()))

    records = fetch_pages(
        url,
        shape.page_list(),
        per_page=shape.per_page,
        concurrency=concurrency,
        before_start=start_clocks,
    )
    cpu0, t0 = started
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return LimitOutcome(seconds, records, cpu, shape.pages)


def entity_sync_run(
    sandbox: SandboxHandle,
    shape: Shape,
    store_kind: str,
    *,
    pool: str,
    concurrency: int,
    name: str,
    extra: dict[str, str] | None = None,
    measure_rss: bool = False,
) -> tuple[SyncOutcome, float]:
    """One full sync of every connection by a fresh worker into a fresh store.

    Returns the outcome and the store's bytes per record.
    """
    with fresh_store(store_kind, name) as spec:
        env = BenchEnv(store_url=spec.url, upstream_url=sandbox.url, extra=dict(extra or {}))
        env.extra.setdefault("ENTITY_SYNC_POOL_SIZE", str(max(20, concurrency)))
        from bench.common import flush_redis

        flush_redis(env.redis)
        store = env.store()
        ids = shape.register(env, store)
        green = pool in ("gevent", "eventlet")
        # Celery refuses an embedded beat with green pools: run it beside the worker.
        beat = start_beat(env, name) if green else None
        worker = start_worker(env, name, pool=pool, concurrency=concurrency, beat=not green)
        try:
            outcome = timed_sync(
                env, store, worker, ids, shape.connections * len(shape.entity_types)
            )
            if measure_rss:
                outcome.peak_rss_mb = worker.peak_rss_mb()[0]
        finally:
            worker.stop()
            if beat is not None:
                beat.stop()
        spec.checkpoint()
        size = spec.size_bytes() / max(1, outcome.records)
        store.drop_connection()
        return outcome, size


def run(*, quick: bool, runs: int) -> tuple[Section, list[str]]:
    shape = (
        Shape(connections=4, entity_types=ENTITY_TYPES[:2], records=1_000)
        if quick
        else Shape(connections=20, entity_types=ENTITY_TYPES, records=2_500)
    )
    concurrency = 16
    section = Section(
        "throughput",
        "1. Throughput against the limit",
        f"python -m bench --only throughput{' --quick' if quick else ''}",
    )
    results: dict[str, list[Any]] = {"limit": [], "sqlite": [], "postgresql": []}
    sizes: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    ratios: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    with running_sandbox(config=shape.config()) as sandbox:
        say(f"throughput: generating {shape.total:,} records in the sandbox")
        warm(sandbox, [shape.token(i) for i in range(shape.connections)], shape.entity_types)
        floor = measure_floor(
            sandbox.url,
            shape.token(0),
            shape.entity_types[0],
            per_page=shape.per_page,
            pages=-(-shape.records // shape.per_page),
        )
        for rep in range(runs):
            limit = limit_run(sandbox.url, shape, concurrency)
            results["limit"].append(limit)
            limit_rate = limit.records / limit.seconds
            say(f"throughput run {rep + 1}: limit {limit_rate:,.0f} rec/s")
            for kind in ("sqlite", "postgresql"):
                outcome, size = entity_sync_run(
                    sandbox,
                    shape,
                    kind,
                    pool="threads",
                    concurrency=concurrency,
                    name=f"throughput-{kind}-{rep}",
                )
                if outcome.records != shape.total or outcome.failed:
                    raise RuntimeError(
                        f"throughput on {kind}: {outcome.records}/{shape.total} records, "
                        f"{outcome.failed} failed runs"
                    )
                results[kind].append(outcome)
                sizes[kind].append(size)
                rate = outcome.records / outcome.seconds
                ratios[kind].append(rate / limit_rate)
                say(
                    f"throughput run {rep + 1}: entity-sync on {kind} {rate:,.0f} rec/s "
                    f"({rate / limit_rate:.2f} of the limit)"
                )
    section.text(
        f"Data set: {shape.connections} connections x {len(shape.entity_types)} entity types x "
        f"{shape.records:,} records = {shape.total:,} records ({shape.pages:,} pages of "
        f"{shape.per_page}), served by the sandbox with no added latency. Both sides run "
        f"{concurrency} requests at a time: the limit is {concurrency} threads sharing one "
        f"httpx client that fetch every page by number and parse the JSON; entity-sync is one "
        f"`--pool=threads --concurrency={concurrency}` worker (embedded beat), timed from "
        "enqueueing `sync_connection` for every connection to the last run's end, with every "
        f"record committed. Medians of {runs} interleaved runs; the ratio is the median of "
        "each run's ratio to the limit run just before it. "
        "`ENTITY_SYNC_RATE_PER_SECOND=10000` (the 10/s default is a production guard)."
    )
    table = section.table(
        Table(
            [
                "",
                "records/s",
                "ratio to the limit",
                "wall s",
                "requests",
                "CPU µs/record",
                "store bytes/record",
            ]
        )
    )
    lim = results["limit"]
    table.add(
        "limit (httpx + json)",
        median([r.records / r.seconds for r in lim]),
        1.0,
        median([r.seconds for r in lim]),
        lim[0].pages,
        median([r.cpu_s / r.records * 1e6 for r in lim]),
        "-",
    )
    for kind in ("sqlite", "postgresql"):
        outs: list[SyncOutcome] = results[kind]
        table.add(
            f"entity-sync, {kind}",
            median([o.records / o.seconds for o in outs]),
            median(ratios[kind]),
            median([o.seconds for o in outs]),
            int(median([o.pages for o in outs])),
            median([o.cpu_s / o.records * 1e6 for o in outs]),
            median(sizes[kind]),
        )
    section.text(
        "CPU µs/record is user+system CPU of the worker's process tree (main process and "
        "embedded beat) over the sync, per record; for the limit, the CPU of the fetching "
        "process. Requests for entity-sync are the pages its runs committed (keyset paging "
        "re-reads the boundary of each page and reads bulk-import tie groups by page number, "
        "so it asks a few more pages than the limit)."
    )
    limit_cpu = median([r.cpu_s / r.records * 1e6 for r in lim])
    _floor_table(section, floor, limit_cpu)
    ceiling = {k: limit_cpu / (limit_cpu + floor.extra(k)) for k in ("sqlite", "postgresql")}
    summary = [
        f"- Throughput vs the limit (target >= 0.8): SQLite {median(ratios['sqlite']):.2f}, "
        f"PostgreSQL {median(ratios['postgresql']):.2f}; one process's ceiling from the "
        f"work the limit does not do: SQLite {ceiling['sqlite']:.2f}, "
        f"PostgreSQL {ceiling['postgresql']:.2f}."
    ]
    return section, summary


def _floor_table(section: Section, floor: Floor, limit_cpu: float) -> None:
    """The work per record that the limit does not do, and the ceiling it sets."""
    section.text(
        f"**The floor.** `bench/record_floor.py` times, in one thread and with no HTTP, "
        f"Redis or Celery, what entity-sync does to a record beyond the limit's fetch and "
        f"`json.loads`, on {floor.records:,} records of the sandbox: the exact reading of the page "
        "(docs/records.md), the record checks, and the page's commit (records, cursor, run "
        "progress) into a fresh store. CPU µs per record, medians of "
        f"{REPEATS}:"
    )
    table = section.table(Table(["stage", "CPU µs/record"]))
    table.add("the limit's `json.loads` of the page", floor.json_loads)
    table.add("exact reading (`parse_list_body`)", floor.exact_parse)
    table.add("record checks (`split_records`)", floor.checks)
    for kind in ("sqlite", "postgresql"):
        table.add(f"page commit, {kind} (this process only)", floor.commit[kind])
    ceilings = {
        kind: limit_cpu / (limit_cpu + floor.extra(kind)) for kind in ("sqlite", "postgresql")
    }
    section.text(
        f"Beyond the limit's {limit_cpu:.1f} µs a record, one process must spend at least "
        f"{floor.extra('sqlite'):.1f} µs (SQLite) or {floor.extra('postgresql'):.1f} µs "
        "(PostgreSQL, whose server's own work comes on top) before any lease, breaker, "
        "page bookkeeping or Celery. One threads worker runs its Python on one core at a "
        "time (the GIL), so a process that did only this work would reach about "
        f"{ceilings['sqlite']:.2f} (SQLite) and {ceilings['postgresql']:.2f} (PostgreSQL) "
        "of the limit: 0.8 with one process would need the checks and the commit almost "
        "free. More throughput comes from more processes (section 8)."
    )
