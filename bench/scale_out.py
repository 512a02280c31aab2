"""8. Scale-out: 1, 2 and 4 worker processes, RabbitMQ as the broker, PostgreSQL as the store.

Each configuration is ``entity-sync workers --processes N`` (docs/operating.md, "One
worker process per core": N Celery workers ``--pool=threads
--concurrency=16``, node names s<i>@host) syncing every connection at once,
against the limit measured with as many fetching processes. Besides
throughput it reports fairness across connections and the load each record
puts on the shared services, the figures docs/scaling.md extrapolates from:

- Redis: a private ``redis-server`` (coordination only: the broker is
  RabbitMQ), PostgreSQL a private cluster with pg_stat_statements, RabbitMQ a
  virtual host of the run's own (bench/service_load.py).
- The limit: as many fetching processes (bench/limit_processes.py).

No beat runs: its housekeeping would add load unrelated to the records.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import redis

from bench.common import (
    OUT_DIR,
    ROOT,
    BenchEnv,
    Proc,
    count_records,
    enqueue_all,
    fresh_store,
    median,
    parse_instant,
    say,
    wait_runs,
)
from bench.limit_processes import CONCURRENCY, limit_with_processes
from bench.report import Section, Table
from bench.service_load import (
    OBSERVER,
    PgLoad,
    PostgresCluster,
    postgres_cpu_s,
    postgres_load,
    private_postgres,
    private_redis,
    rabbitmq_vhost,
    redis_load,
    reset_postgres_stats,
    with_user,
)
from bench.svgplot import Series, write_chart
from bench.throughput import ENTITY_TYPES, Shape, warm
from harness.testing.sandbox import running_sandbox

PROCESSES = (1, 2, 4)
DEFAULT_STACK = (1, 2)  # the default stack, Redis broker and SQLite, for comparison
CHART = ROOT / "docs" / "scale-out.svg"


def shape_for(*, quick: bool) -> Shape:
    if quick:
        return Shape(connections=4, entity_types=ENTITY_TYPES[:2], records=1_000)
    return Shape(connections=16, entity_types=ENTITY_TYPES, records=1_500)


# -- entity-sync with N processes -----------------------------------------------------------


@dataclass
class ScaleOutcome:
    processes: int
    records: int
    seconds: float
    fairness: float  # slowest connection's finish time / the median connection's
    worker_cpu_s: float
    redis_commands: int
    redis_cpu_s: float
    pg: PgLoad
    pages: int
    redis_keys: int  # keys left in Redis at the end (the connections' state, with TTLs)
    redis_bytes: int  # MEMORY USAGE of those keys, summed

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def start_workers(env: BenchEnv, processes: int, name: str) -> Proc:
    """``entity-sync workers --processes N`` (docs/operating.md); waits for every ``ready.``."""
    command = [
        sys.executable, "-m", "worker.ops.cli", "workers", "--processes", str(processes),
        "--name-prefix", f"s{uuid.uuid4().hex[:4]}", "--", f"--concurrency={CONCURRENCY}",
    ]  # fmt: skip
    proc = Proc(command, env.process_env(), OUT_DIR / "logs" / f"{name}.log").start(ready=None)
    deadline = time.monotonic() + 120
    while proc.log_path.read_bytes().count(b"ready.") < processes:
        if proc.proc is None or proc.proc.poll() is not None or time.monotonic() > deadline:
            tail = proc.log_path.read_text(errors="replace")[-3000:]
            proc.stop()
            raise RuntimeError(f"{processes} workers did not start:\n{tail}")
        time.sleep(0.2)
    return proc


def scale_run(
    shape: Shape,
    processes: int,
    *,
    sandbox_url: str,
    broker: str,
    redis_url: str,
    redis_client: redis.Redis,
    cluster: PostgresCluster,
    name: str,
) -> ScaleOutcome:
    schema = f"es_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    store_url = f"{cluster.url}?options=-csearch_path%3D{schema}"
    env = BenchEnv(
        store_url=store_url,
        upstream_url=sandbox_url,
        redis=redis_url,
        broker=broker,
        extra={"ENTITY_SYNC_POOL_SIZE": str(max(20, CONCURRENCY))},
    )
    redis_client.flushall()
    harness = BenchEnv(store_url=with_user(store_url, OBSERVER), upstream_url=sandbox_url)
    harness.secret_key = env.secret_key
    store = harness.store()
    ids = shape.register(harness, store)
    workers = start_workers(env, processes, name)
    try:
        redis_client.config_resetstat()
        reset_postgres_stats(cluster)
        pg_cpu0 = postgres_cpu_s(cluster)
        _, redis_cpu0 = redis_load(redis_client)
        cpu0 = workers.cpu_seconds()
        started, requests = enqueue_all(env, ids)
        runs = wait_runs(
            store, requests, shape.connections * len(shape.entity_types), timeout_s=1200
        )
        worker_cpu = workers.cpu_seconds() - cpu0
    finally:
        workers.stop(timeout=60)  # the backends end with them: their statistics are flushed
    time.sleep(1.0)
    pg = postgres_load(cluster)
    pg.cpu_s -= pg_cpu0
    redis_calls, redis_cpu = redis_load(redis_client)
    redis_keys = int(redis_client.dbsize())
    redis_bytes = sum(int(redis_client.memory_usage(k) or 0) for k in redis_client.scan_iter())
    records = count_records(store)
    failed = [r for r in runs if str(r.status) != "succeeded"]
    if records != shape.total or failed:
        raise RuntimeError(f"scale-out {processes}: {records}/{shape.total} records, {failed}")
    finish = finish_times(runs, started)
    store.drop_connection()
    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
    return ScaleOutcome(
        processes=processes,
        records=records,
        seconds=max(finish.values()),
        fairness=max(finish.values()) / median(list(finish.values())),
        worker_cpu_s=worker_cpu,
        redis_commands=redis_calls,
        redis_cpu_s=redis_cpu - redis_cpu0,
        pg=pg,
        pages=sum(r.pages for r in runs),
        redis_keys=redis_keys,
        redis_bytes=redis_bytes,
    )


def finish_times(runs: Sequence[Any], started: float) -> dict[str, float]:
    """Each connection's finish: its last run's end, seconds after the enqueue."""
    finish: dict[str, float] = {}
    for run in runs:
        end = parse_instant(run.finished_at) - started
        finish[run.connection_id] = max(finish.get(run.connection_id, 0.0), end)
    return finish


def default_stack_run(
    shape: Shape,
    processes: int,
    *,
    sandbox_url: str,
    redis_url: str,
    redis_client: redis.Redis,
    name: str,
) -> tuple[float, float]:
    """(records/s, fairness) with the default stack: one Redis as broker and
    coordination, a SQLite store (one writer at a time, whatever the processes)."""
    redis_client.flushall()
    with fresh_store("sqlite", name) as spec:
        env = BenchEnv(
            store_url=spec.url,
            upstream_url=sandbox_url,
            redis=redis_url,
            extra={"ENTITY_SYNC_POOL_SIZE": str(max(20, CONCURRENCY))},
        )
        store = env.store()
        ids = shape.register(env, store)
        workers = start_workers(env, processes, name)
        try:
            started, requests = enqueue_all(env, ids)
            runs = wait_runs(
                store, requests, shape.connections * len(shape.entity_types), timeout_s=1200
            )
        finally:
            workers.stop(timeout=60)
        records = count_records(store)
        store.drop_connection()
    failed = [r for r in runs if str(r.status) != "succeeded"]
    if records != shape.total or failed:
        raise RuntimeError(f"default stack {processes}: {records}/{shape.total} records, {failed}")
    finish = finish_times(runs, started)
    return records / max(finish.values()), max(finish.values()) / median(list(finish.values()))


# -- the suite ------------------------------------------------------------------------------


def run(*, quick: bool, runs: int) -> tuple[Section, list[str]]:
    shape = shape_for(quick=quick)
    section = Section(
        "scale_out",
        "8. Scale-out: worker processes, RabbitMQ and PostgreSQL",
        f"python -m bench --only scale_out{' --quick' if quick else ''}",
    )
    outcomes: dict[int, list[ScaleOutcome]] = {n: [] for n in PROCESSES}
    limits: dict[int, list[float]] = {n: [] for n in PROCESSES}
    ratios: dict[int, list[float]] = {n: [] for n in PROCESSES}
    default: dict[int, list[tuple[float, float, float]]] = {n: [] for n in DEFAULT_STACK}
    with (
        running_sandbox(config=shape.config()) as sandbox,
        rabbitmq_vhost() as broker,
        private_redis() as (redis_url, redis_client),
        private_postgres() as cluster,
    ):
        say(f"scale_out: generating {shape.total:,} records in the sandbox")
        warm(sandbox, [shape.token(i) for i in range(shape.connections)], shape.entity_types)
        for rep in range(runs):
            for n in PROCESSES:
                limit = limit_with_processes(sandbox.url, shape, n)
                limits[n].append(limit)
                outcome = scale_run(
                    shape,
                    n,
                    sandbox_url=sandbox.url,
                    broker=broker,
                    redis_url=redis_url,
                    redis_client=redis_client,
                    cluster=cluster,
                    name=f"scale-out-{n}-{rep}",
                )
                outcomes[n].append(outcome)
                ratios[n].append(outcome.rate / limit)
                say(
                    f"scale_out run {rep + 1}, {n} process(es): {outcome.rate:,.0f} rec/s, "
                    f"limit {limit:,.0f} ({outcome.rate / limit:.2f}), fairness "
                    f"{outcome.fairness:.2f}"
                )
                if n in DEFAULT_STACK:
                    rate_n, fair = default_stack_run(
                        shape,
                        n,
                        sandbox_url=sandbox.url,
                        redis_url=redis_url,
                        redis_client=redis_client,
                        name=f"scale-out-default-{n}-{rep}",
                    )
                    default[n].append((rate_n, rate_n / limit, fair))
                    say(f"scale_out run {rep + 1}, default stack, {n}: {rate_n:,.0f} rec/s")
    describe(section, shape, runs)
    rate = {n: median([o.rate for o in outcomes[n]]) for n in PROCESSES}
    table = section.table(
        Table(
            [
                "worker processes",
                "records/s",
                "limit records/s (as many processes)",
                "ratio to the limit",
                "x 1 process",
                "fairness (slowest / median connection)",
                "worker CPU µs/record",
            ]
        )
    )
    for n in PROCESSES:
        table.add(
            n,
            rate[n],
            median(limits[n]),
            median(ratios[n]),
            rate[n] / rate[1],
            median([o.fairness for o in outcomes[n]]),
            median([o.worker_cpu_s / o.records * 1e6 for o in outcomes[n]]),
        )
    load = section.table(
        Table(
            [
                "worker processes",
                "Redis commands/record",
                "Redis CPU µs/record",
                "PG statements/record",
                "PG transactions/page",
                "PG rows/record",
                "PG WAL bytes/record",
                "PG CPU µs/record",
            ]
        )
    )
    for n in PROCESSES:
        outs = outcomes[n]
        load.add(
            n,
            median([o.redis_commands / o.records for o in outs]),
            median([o.redis_cpu_s / o.records * 1e6 for o in outs]),
            median([o.pg.statements / o.records for o in outs]),
            median([o.pg.commits / o.pages for o in outs]),
            median([o.pg.rows / o.records for o in outs]),
            median([o.pg.wal_bytes / o.records for o in outs]),
            median([o.pg.cpu_s / o.records * 1e6 for o in outs]),
        )
    section.text(
        "Redis state per connection at the end of a run (keys with TTLs, left by "
        f"{shape.connections} connections of {len(shape.entity_types)} entity types): "
        f"{median([o.redis_keys / shape.connections for o in outcomes[1]]):.1f} keys, "
        f"{median([o.redis_bytes / shape.connections for o in outcomes[1]]):,.0f} bytes "
        "(MEMORY USAGE of each key, summed)."
    )
    section.text(
        "The default stack for comparison (one Redis as broker and coordination, "
        "a SQLite store, which takes one writer at a time), same data and limits, run "
        "right after the row of as many processes above:"
    )
    plain = section.table(
        Table(["worker processes", "records/s", "ratio to the limit", "x 1 process", "fairness"])
    )
    for n in DEFAULT_STACK:
        plain.add(
            n,
            median([r for r, _, _ in default[n]]),
            median([q for _, q, _ in default[n]]),
            median([r for r, _, _ in default[n]]) / median([r for r, _, _ in default[1]]),
            median([f for _, _, f in default[n]]),
        )
    last = outcomes[1][-1]
    top = section.table(Table(["statement (1 process, last run; first 90 characters)", "per page"]))
    for query, calls in last.pg.top:
        top.add(f"`{query.replace('|', '/')}`", calls / max(1, last.pages))
    explain(section, shape, outcomes, rate)
    chart = write_chart(
        CHART,
        "Throughput against worker processes (RabbitMQ, PostgreSQL)",
        "worker processes (threads pool, 16 slots each)",
        "records/s",
        list(PROCESSES),
        [
            Series("entity-sync", [rate[n] for n in PROCESSES]),
            Series("limit (httpx + JSON)", [median(limits[n]) for n in PROCESSES], dashed=True),
        ],
    )
    section.text(f"![Throughput against worker processes]({chart.relative_to(ROOT).as_posix()})")
    per = {n: outcomes[n] for n in PROCESSES}
    summary = [
        "- Scale-out (RabbitMQ, PostgreSQL): 1/2/4 worker processes on "
        f"{os.cpu_count()} cores: "
        + ", ".join(f"{rate[n]:,.0f}" for n in PROCESSES)
        + " records/s ("
        + ", ".join(f"{median(ratios[n]):.2f}" for n in PROCESSES)
        + " of the limit); slowest connection / median "
        + ", ".join(f"{median([o.fairness for o in per[n]]):.2f}" for n in PROCESSES)
        + f"; per record {median([o.redis_commands / o.records for o in per[1]]):.2f} Redis "
        f"commands, {median([o.pg.statements / o.records for o in per[1]]):.2f} PostgreSQL "
        "statements (docs/scaling.md); default stack (Redis broker, SQLite) 1/2 processes "
        + ", ".join(f"{median([r for r, _, _ in default[n]]):,.0f}" for n in DEFAULT_STACK)
        + " records/s."
    ]
    return section, summary


def describe(section: Section, shape: Shape, runs: int) -> None:
    section.text(
        f"Data set: {shape.connections} connections x {len(shape.entity_types)} entity types x "
        f"{shape.records:,} records = {shape.total:,} records ({shape.pages:,} pages of "
        f"{shape.per_page}), the sandbox with no added latency. Each row is "
        "`entity-sync workers --processes N -- --concurrency=16` (N Celery workers, "
        "`--pool=threads`, node names s<run>1@host ... s<run>N@host, no beat) with RabbitMQ as the "
        "broker (a virtual host of the run's own) and PostgreSQL as the store (a private "
        "cluster, fsync on, pg_stat_statements), coordination on a private Redis. Timed "
        "from enqueueing `sync_connection` for every connection to the last run's end; the "
        "limit is plain httpx + JSON with as many fetching processes, 16 threads each, run "
        f"just before. Medians of {runs} run(s); ratios are each run's own. "
        f"This machine has {os.cpu_count()} cores, shared with the sandbox (one Python "
        "process), RabbitMQ, Redis and PostgreSQL: more processes than free cores cannot "
        "scale here, which is why the per-record load below is the figure to plan with."
    )


def explain(
    section: Section, shape: Shape, outcomes: dict[int, list[ScaleOutcome]], rate: dict[int, float]
) -> None:
    one = outcomes[1]
    pages_per_record = median([o.pages / o.records for o in one])
    section.text(
        "Fairness is the slowest connection's finish time over the median connection's "
        "(1.0: all finish together); every connection is enqueued at once and their "
        "entity types share the workers' slots in queue order. Redis commands are what the "
        "private server executed (INFO commandstats, commands run inside the Lua scripts "
        "included) and its CPU (INFO cpu); PostgreSQL statements are the workers' own "
        "(pg_stat_statements, which does not count BEGIN and COMMIT; the harness's polling "
        "is left out), transactions the database's commits less the harness's, "
        "rows those returned or affected, WAL bytes those written, and CPU the whole "
        "cluster's (postmaster, backends, background writers). "
        f"A page is {shape.per_page} records ({pages_per_record * shape.per_page:.2f} "
        "pages read per 100 records here): per-page costs divide by 100 per record."
    )
    best = max(rate, key=lambda n: rate[n])
    section.text(
        f"Fastest here: {best} process(es), {rate[best]:,.0f} records/s "
        f"({rate[best] / rate[1]:.2f}x one process). What one Redis and one PostgreSQL "
        "can carry follows from the per-record figures (docs/scaling.md)."
    )
