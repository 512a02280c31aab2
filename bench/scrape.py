"""6. Scrape cost: /metrics, /api/status and `status` with 1,000,000 records.

A fleet of 1,000 connections x 8 entity types (8,000 pairs) holding 1,000,000
records, three finished runs per pair folded into the counters, and a few
hundred runs not folded yet, on SQLite and PostgreSQL. Each scrape is a real
GET on the dashboard's HTTP server with its cache off, so every one reads the
store again. Measured twice: the store's side alone (no breakers) and the
whole scrape with the breakers of every connection read from Redis. For
comparison, the whole-table count the store used to run on every scrape.

    python -m bench --only scrape     # all suites' report, this suite only
    python -m bench.scrape            # this suite, spliced into BENCHMARKS.md
"""

from __future__ import annotations

import http.client
import os
import sys
import time
from collections.abc import Callable

import redis

from bench.common import fresh_store, median, redis_url, say
from bench.report import Section, Table
from worker.breaker import Breaker
from worker.dashboard.metrics import families, registry_for, render, render_reference
from worker.dashboard.server import Dashboard, DashboardServer
from worker.entities import ALL_ENTITY_TYPES
from worker.status import status_rows
from worker.store import SqlStore, open_store

CONNECTIONS = 1_000  # the fleet of issue 13; the first shape has a tenth of it
RECORDS = 1_000_000
TARGET_MS = 50.0
NOW = "2026-11-01T00:00:00.000000Z"
SCRAPE_DB = 9  # the breakers of the fleet, flushed before and after


def _fill(store: SqlStore, connections: int, records: int) -> None:
    """Bulk-load the fleet straight into the tables, counters included."""
    entities = [t.value for t in ALL_ENTITY_TYPES][:8]
    per_pair = records // (connections * len(entities))
    postgres = store.dialect.name == "postgresql"
    with store._write() as tx:
        tx.executemany(
            "INSERT INTO connections (id, name, entity_types, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (f"conn-{i:04}", f"Customer {i:04}", ",".join(entities), NOW, NOW)
                for i in range(connections)
            ],
        )
    numbers = (
        f"generate_series(0, {per_pair - 1}) AS n(i)"
        if postgres
        else f"(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s "
        f"WHERE i < {per_pair - 1}) SELECT i FROM s) AS n"
    )
    key = "c.id || '-' || e.t || '-' || CAST(n.i AS TEXT)"
    data = "CAST(json_build_object('id', n.i) AS JSONB)" if postgres else "json_object('id', n.i)"
    values = " UNION ALL ".join(f"SELECT '{e}' AS t" for e in entities)
    for start in range(0, connections, 100):  # 100 connections per transaction
        with store._write() as tx:
            tx.execute(
                "INSERT INTO records (connection_id, entity_type, key, data, source_updated_at, "
                f"deleted_at, synced_at) SELECT c.id, e.t, {key}, {data}, ?, "
                "CASE WHEN MOD(n.i, 50) = 0 THEN ? ELSE NULL END, ? "
                f"FROM connections c CROSS JOIN ({values}) AS e CROSS JOIN {numbers} "
                "WHERE c.id >= ? AND c.id < ?",
                (NOW, NOW, NOW, f"conn-{start:04}", f"conn-{start + 100:04}"),
            )
    with store._write() as tx:
        # What commit_page keeps up to date, computed once for the bulk load.
        tx.execute(
            "INSERT INTO pair_counts (connection_id, entity_type, live, deleted, pages, written) "
            "SELECT connection_id, entity_type, "
            "SUM(CASE WHEN deleted_at IS NULL THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN deleted_at IS NULL THEN 0 ELSE 1 END), COUNT(*) / 100 + 1, COUNT(*) "
            "FROM records GROUP BY connection_id, entity_type"
        )
        rows = []
        for i in range(connections):
            for entity in entities:
                for n, status in enumerate(("succeeded", "succeeded", "failed")):
                    rows.append(
                        (
                            f"run-{i}-{entity}-{n}",
                            f"conn-{i:04}",
                            entity,
                            "scheduled",
                            False,
                            status,
                            f"2026-10-31T2{n}:00:00.000000Z",
                            f"2026-10-31T2{n}:01:00.000000Z",
                            "unavailable" if status == "failed" else None,
                        )
                    )
        tx.executemany(
            "INSERT INTO runs (id, connection_id, entity_type, trigger, is_full, status, "
            "started_at, finished_at, error_kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    store.fold_runs(batch=10_000, max_batches=100)
    with store._write() as tx:  # runs finished since housekeeping last folded
        tx.executemany(
            "INSERT INTO runs (id, connection_id, entity_type, trigger, is_full, status, "
            "started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (f"fresh-{i}", f"conn-{i:04}", "assets", "scheduled", False, "succeeded", NOW, NOW)
                for i in range(0, connections, 3)
            ],
        )
    if postgres:
        with store._write() as tx:
            tx.execute("ANALYZE")


def _get(server: DashboardServer, path: str) -> float:
    host, port = server.server_address[0], server.server_address[1]
    started = time.perf_counter()
    conn = http.client.HTTPConnection(str(host), port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200 and body, (path, response.status)
    finally:
        conn.close()
    return (time.perf_counter() - started) * 1000


def _timed(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return median(times)


def measure(kind: str, *, connections: int, records: int, repeats: int) -> dict[str, float]:
    """Milliseconds (medians) of each way of reading the fleet's state."""
    with fresh_store(kind, "scrape") as spec:
        store = open_store(spec.url)
        say(f"scrape: loading {records:,} records into {kind}")
        started = time.monotonic()
        _fill(store, connections, records)
        say(f"scrape: loaded in {time.monotonic() - started:.0f} s")
        client = redis.Redis.from_url(redis_url(SCRAPE_DB), socket_connect_timeout=3)
        client.flushdb()
        breaker = Breaker(client=client)
        for i in range(0, connections, 10):  # some state to read: a tenth are paused
            breaker.pause(f"conn-{i:04}", 600, "rate_limited: 429")
        out: dict[str, float] = {}
        try:
            for label, with_breakers in (("store", None), ("full", breaker)):
                server = DashboardServer(
                    "127.0.0.1", 0, Dashboard(store, with_breakers, 900.0, cache_s=0)
                ).start()
                try:
                    for path in ("/metrics", "/api/status"):
                        _get(server, path)  # warm caches and connections
                        times = [_get(server, path) for _ in range(repeats)]
                        out[f"{label} {path}"] = median(times)
                finally:
                    server.close()
            out["status (all rows)"] = _timed(lambda: status_rows(store, None, None), repeats)
            out["old: COUNT over records"] = _timed(
                lambda: store._read(
                    "SELECT connection_id, entity_type, COUNT(*), "
                    "SUM(CASE WHEN deleted_at IS NULL THEN 0 ELSE 1 END) FROM records "
                    "GROUP BY connection_id, entity_type"
                ),
                max(3, repeats // 4),
            )
            (count,) = store._read("SELECT COUNT(*) FROM records")[0]
            out["records"] = float(count)
            grid, totals = Dashboard(store, None, 900.0).snapshot()
            out["samples"] = float(sum(len(f.samples) for f in families(grid, totals)))
            # The exposition alone, from the same collector: generate_latest, and the
            # writer /metrics uses (the same bytes).
            registry = registry_for(lambda: (grid, totals))
            assert render(registry) == render_reference(registry)
            out["render: generate_latest"] = _timed(lambda: render_reference(registry), repeats)
            out["render: entity-sync writer"] = _timed(lambda: render(registry), repeats)
        finally:
            client.flushdb()
            client.close()
            store.drop_connection()
    return out


def run(*, quick: bool, runs: int) -> tuple[Section, list[str]]:
    records = 100_000 if quick else RECORDS
    shapes = (10, 100) if quick else (100, CONNECTIONS)
    repeats = 5 if quick else max(11, 3 * runs + 2)
    section = Section(
        "scrape",
        "6. Scrape cost with 1,000,000 records",
        f"python -m bench --only scrape{' --quick' if quick else ''}",
    )
    section.text(
        f"{records:,} records (2% deleted) spread over {shapes[0]:,} and over {shapes[1]:,} "
        "connections of 8 entity types each, three folded runs per pair and a few hundred "
        f"not folded yet. Each number is the median of {repeats} real GETs on the "
        "dashboard's HTTP server with its cache off (every one reads the store again). "
        "*store*: no breakers, the part that grows with records and history; *full*: "
        "every connection's breakers read from Redis as well (two round trips per "
        "connection; a tenth of them paused). `status` is `status_rows` of every pair "
        "without breakers. The last row is the whole-table count every scrape and every "
        "`status` ran before the counters of schema version 5."
    )
    header = ["ms (median)"]
    results: dict[tuple[int, str], dict[str, float]] = {}
    for connections in shapes:
        for kind in ("sqlite", "postgresql"):
            header.append(f"{connections:,} conn., {kind}")
            results[(connections, kind)] = measure(
                kind, connections=connections, records=records, repeats=repeats
            )
    started_load = os.getloadavg()[0]
    table = section.table(Table(header))
    for label in (
        "store /metrics",
        "store /api/status",
        "full /metrics",
        "full /api/status",
        "status (all rows)",
        "render: generate_latest",
        "render: entity-sync writer",
        "old: COUNT over records",
    ):
        table.add(label, *(results[key][label] for key in results))
    samples = {key: results[key]["samples"] for key in results}
    table.add("/metrics samples", *(int(v) for v in samples.values()))
    section.text(
        f"Load average (1 min) when the measurements ended: {started_load:.1f} on "
        f"{os.cpu_count()} cores; the machine is shared, so read the columns side by side. "
        "The two *render* rows time the text exposition alone, collector included, of the "
        "same registry: prometheus_client's `generate_latest`, and the writer /metrics "
        "uses, which produces the same bytes (asserted)."
    )
    few, many = shapes
    line = (
        f"- Scrape with {records:,} records (target < {TARGET_MS:.0f} ms): /metrics from the "
        f"store {results[(few, 'sqlite')]['store /metrics']:.0f} ms SQLite, "
        f"{results[(few, 'postgresql')]['store /metrics']:.0f} ms PostgreSQL at {few:,} "
        f"connections; {results[(many, 'sqlite')]['store /metrics']:.0f} / "
        f"{results[(many, 'postgresql')]['store /metrics']:.0f} ms at {many:,} connections "
        f"({int(samples[(many, 'sqlite')]):,} samples: the cost follows the series, not the "
        "records)."
    )
    return section, [line]


def main(argv: list[str] | None = None) -> int:
    """Run this suite alone and splice its section into BENCHMARKS.md."""
    from bench.report import splice

    args = list(sys.argv[1:] if argv is None else argv)
    quick = "--quick" in args
    started = time.monotonic()
    section, summary = run(quick=quick, runs=1 if quick else 3)
    section.seconds = time.monotonic() - started
    section.command = "python -m bench.scrape" + (" --quick" if quick else "")
    splice(section, summary, prefix="- Scrape with")
    return 0


if __name__ == "__main__":
    sys.exit(main())
