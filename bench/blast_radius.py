"""3. Blast radius: 30 healthy connections beside broken ones, entity-sync vs a naive worker.

Runs, in one session and interleaved per repetition: (a) all 50 connections
healthy, (b) the mix with entity-sync, (c) the mix with ``bench.naive_worker``
(and (a) with the naive worker too, so each side has its own baseline).
"""

from __future__ import annotations

import functools
import sqlite3
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from bench.common import (
    DATA_END,
    OUT_DIR,
    BenchEnv,
    Proc,
    celery_command,
    enqueue_all,
    flush_redis,
    fresh_store,
    median,
    parse_instant,
    redis_url,
    say,
    start_worker,
)
from bench.report import Section, Table
from bench.throughput import warm
from harness.testing.sandbox import SandboxHandle, running_sandbox

ENTITY_TYPES = ("assets", "work-orders", "sites")
FORBIDDEN_ENTITY = "work-orders"
GROUPS = {"h": 30, "o": 8, "x": 4, "f": 4, "r": 4}
RETRY_AFTER_S = 3
SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "h": [],
    "o": [{"name": "offline"}],
    "x": [{"name": "auth_fail_from_page", "page": 2}],
    "f": [{"name": "forbidden", "entity": FORBIDDEN_ENTITY}],
    "r": [{"name": "rate_limit", "every": 10, "retry_after_s": RETRY_AFTER_S}],
}
CONCURRENCY = 16
# The setting that leaves no request inside a Retry-After window: one request at a
# time per connection from the start (run "es-b1"), measured beside the default.
ONE_AT_A_TIME = {"ENTITY_SYNC_MAX_CONCURRENCY": "1"}


def tokens(group: str) -> list[str]:
    return [f"{group}{i:02d}" for i in range(GROUPS[group])]


ALL = [t for g in GROUPS for t in tokens(g)]


def slow(latency_ms: float) -> dict[str, Any]:
    return {"name": "slow", "latency_ms": latency_ms, "lists_only": True}


@dataclass
class Observed:
    """What one run of one worker against one set of scenarios showed."""

    healthy_s: float
    requests: Counter[str] = field(default_factory=Counter)  # by token
    inside_retry_after: int = 0
    opens: Counter[str] = field(default_factory=Counter)  # breaker openings by connection
    notifications: Counter[str] = field(default_factory=Counter)  # by connection
    unaffected_synced: float = 0.0  # share of forbidden connections' other types complete


def configure(sandbox: SandboxHandle, mix: bool, latency_ms: float) -> None:
    for group in GROUPS:
        for token in tokens(group):
            scenarios = (SCENARIOS[group] if mix else []) + [slow(latency_ms)]
            sandbox.set_scenarios(token, scenarios)
    sandbox.reset_stats()


def collect_sandbox(sandbox: SandboxHandle, observed: Observed) -> None:
    stats = sandbox.stats()["tokens"]
    for token in ALL:
        entry = stats.get(token, {})
        observed.requests[token] = int(entry.get("total", 0))
        observed.inside_retry_after += int(entry.get("inside_retry_after", 0))


def entity_sync_run(
    sandbox: SandboxHandle,
    *,
    mix: bool,
    size: int,
    latency_ms: float,
    window_s: float,
    name: str,
    extra: dict[str, str] | None = None,
) -> Observed:
    with fresh_store("sqlite", name) as spec:
        env = BenchEnv(store_url=spec.url, upstream_url=sandbox.url, extra=dict(extra or {}))
        flush_redis(env.redis)
        store = env.store()
        env.add_connections(store, [(t, t, ENTITY_TYPES) for t in ALL])
        configure(sandbox, mix, latency_ms)
        worker = start_worker(env, name, concurrency=CONCURRENCY)
        try:
            started, requests = enqueue_all(env, ALL)
            healthy = requests[: GROUPS["h"]]
            deadline = time.monotonic() + 600
            while True:
                runs = [r for rid in healthy for r in store.runs_for_request(rid)]
                done = [r for r in runs if str(r.status) == "succeeded"]
                if len(done) >= GROUPS["h"] * len(ENTITY_TYPES):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: healthy connections not done")
                time.sleep(0.2)
            observed = Observed(healthy_s=max(parse_instant(r.finished_at) for r in done) - started)
            time.sleep(max(0.0, started + window_s - time.time()))
            collect_sandbox(sandbox, observed)
        finally:
            worker.stop()
        for connection_id, count in store._read(  # noqa: SLF001
            "SELECT connection_id, COUNT(*) FROM transitions WHERE to_state = 'open' "
            "GROUP BY connection_id"
        ):
            observed.opens[connection_id] = int(count)
        for connection_id, count in store._read(  # noqa: SLF001
            "SELECT connection_id, COUNT(*) FROM events "
            "WHERE type = 'connection.reauthorization_required' GROUP BY connection_id"
        ):
            observed.notifications[connection_id] = int(count)
        observed.unaffected_synced = _unaffected(
            store._read(  # noqa: SLF001
                "SELECT connection_id, entity_type, COUNT(*) FROM records "
                "GROUP BY connection_id, entity_type"
            ),
            size,
        )
        store.drop_connection()
        return observed


def _unaffected(rows: list[tuple[Any, ...]], size: int) -> float:
    counts = {(r[0], r[1]): int(r[2]) for r in rows}
    wanted = [(t, e) for t in tokens("f") for e in ENTITY_TYPES if e != FORBIDDEN_ENTITY]
    return sum(counts.get(pair, 0) >= size for pair in wanted) / len(wanted)


def naive_run(
    sandbox: SandboxHandle, *, mix: bool, size: int, latency_ms: float, window_s: float, name: str
) -> Observed:
    from bench.naive_worker import QUEUE, init_db

    db_path = OUT_DIR / "stores" / f"{name}-{uuid.uuid4().hex[:6]}.db"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    init_db(str(db_path))
    broker = redis_url()
    flush_redis(broker)
    configure(sandbox, mix, latency_ms)
    env = BenchEnv(store_url="sqlite:///unused", upstream_url=sandbox.url).process_env()
    env.update(NAIVE_BROKER_URL=broker, NAIVE_DB=str(db_path), NAIVE_UPSTREAM_URL=sandbox.url)
    command = celery_command(
        "bench.naive_worker", pool="threads", concurrency=CONCURRENCY, queues=QUEUE, beat=False
    )
    worker = Proc(command, env, OUT_DIR / "logs" / f"{name}.log").start()
    client = Celery("naive_client", broker=broker)
    db = sqlite3.connect(db_path, timeout=30)
    healthy_total = GROUPS["h"] * len(ENTITY_TYPES) * size
    try:
        started = time.time()
        for token in ALL:
            client.send_task(
                "naive.sync_connection",
                kwargs={"connection_id": token, "token": token, "entity_types": list(ENTITY_TYPES)},
                queue=QUEUE,
            )
        deadline = time.monotonic() + 600
        while True:
            count, last = db.execute(
                "SELECT COUNT(*), MAX(synced_at) FROM records WHERE connection_id LIKE 'h%'"
            ).fetchone()
            if count >= healthy_total:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: healthy connections not done ({count})")
            time.sleep(0.2)
        observed = Observed(healthy_s=float(last) - started)
        time.sleep(max(0.0, started + window_s - time.time()))
        collect_sandbox(sandbox, observed)
    finally:
        worker.stop()
    for connection_id, count in db.execute(
        "SELECT connection_id, COUNT(*) FROM alerts GROUP BY connection_id"
    ):
        observed.notifications[connection_id] = int(count)
    observed.unaffected_synced = _unaffected(
        db.execute(
            "SELECT connection_id, entity_type, COUNT(*) FROM records "
            "GROUP BY connection_id, entity_type"
        ).fetchall(),
        size,
    )
    db.close()
    for p in db_path.parent.glob(db_path.name + "*"):
        p.unlink(missing_ok=True)
    return observed


def run(*, quick: bool, runs: int) -> tuple[Section, list[str]]:
    size = 300 if quick else 600
    latency_ms = 50.0
    window_s = 20.0 if quick else 30.0
    config = {
        "data_end": DATA_END,
        "connections": {
            t: {"seed": 500 + i, "sizes": dict.fromkeys(ENTITY_TYPES, size), "default_size": 0}
            for i, t in enumerate(ALL)
        },
    }
    section = Section(
        "blast_radius",
        "3. Blast radius against a naive worker",
        f"python -m bench --only blast_radius{' --quick' if quick else ''}",
    )
    kinds = ("es-a", "es-b", "es-b1", "naive-a", "naive-c")
    results: dict[str, list[Observed]] = {k: [] for k in kinds}
    with running_sandbox(config=config) as sandbox:
        warm(sandbox, ALL, ENTITY_TYPES)
        for rep in range(runs):
            for kind in kinds:
                if kind.startswith("es"):
                    fn = functools.partial(
                        entity_sync_run, extra=ONE_AT_A_TIME if kind == "es-b1" else None
                    )
                else:
                    fn = naive_run
                observed = fn(
                    sandbox,
                    mix=not kind.endswith("a"),
                    size=size,
                    latency_ms=latency_ms,
                    window_s=window_s,
                    name=f"blast-{kind}-{rep}",
                )
                results[kind].append(observed)
                say(f"blast run {rep + 1}: {kind}: healthy done in {observed.healthy_s:.1f} s")
    return _report(section, results, size=size, latency_ms=latency_ms, window_s=window_s, runs=runs)


def _per(observed: list[Observed], group: str, what: str) -> float:
    values = []
    for o in observed:
        source = o.requests if what == "requests" else o.notifications
        values.append(sum(source[t] for t in tokens(group)) / GROUPS[group])
    return median(values)


_RATE_LIMIT_ROWS = (
    "requests inside Retry-After windows (4 connections)",
    "requests per rate-limited connection",
)


def _rate_limit_row(measure: str, observed: list[Observed]) -> float:
    """One of ``_RATE_LIMIT_ROWS`` for one worker's runs."""
    if measure == _RATE_LIMIT_ROWS[0]:
        return median([o.inside_retry_after for o in observed])
    return _per(observed, "r", "requests")


def _report(
    section: Section,
    results: dict[str, list[Observed]],
    *,
    size: int,
    latency_ms: float,
    window_s: float,
    runs: int,
) -> tuple[Section, list[str]]:
    section.text(
        f"50 connections x {len(ENTITY_TYPES)} entity types x {size} records, list pages "
        f"delayed {latency_ms:.0f} ms; the mix: 30 healthy, 8 offline (503 on every request, "
        "status endpoint included), 4 whose token expires at their 2nd list request (401; "
        f"status says `fail`), 4 forbidden (403) on {FORBIDDEN_ENTITY}, 4 rate limited "
        f"(every 10th request 429 with `Retry-After: {RETRY_AFTER_S}`; the sandbox answers "
        "429 to every request inside the window and counts it). Both workers are "
        f"`--pool=threads --concurrency={CONCURRENCY}` on SQLite; each run observes "
        f"{window_s:.0f} s from enqueueing. The naive worker is `bench/naive_worker.py`: "
        "`autoretry_for=(Exception,)`, `retry_backoff=True`, Celery's default 3 retries, "
        "page numbers, an alert row when a task finally fails. Medians of "
        f"{runs} runs; every run interleaved with the others."
    )
    es_a, es_b = results["es-a"], results["es-b"]
    nv_a, nv_c = results["naive-a"], results["naive-c"]
    es_ratio = median([b.healthy_s / a.healthy_s for a, b in zip(es_a, es_b, strict=True)])
    nv_ratio = median([c.healthy_s / a.healthy_s for a, c in zip(nv_a, nv_c, strict=True)])
    opens = median([sum(o.opens[t] for t in tokens("o")) / GROUPS["o"] for o in es_b])
    offline_req = _per(es_b, "o", "requests")
    per_interval = median(
        [
            sum(o.requests[t] for t in tokens("o")) / max(1, sum(o.opens[t] for t in tokens("o")))
            for o in es_b
        ]
    )
    table = section.table(Table(["measure", "target", "entity-sync (b)", "naive (c)"]))
    table.add(
        "healthy connections done, all healthy (a), s",
        "-",
        median([o.healthy_s for o in es_a]),
        median([o.healthy_s for o in nv_a]),
    )
    table.add(
        "healthy connections done, in the mix, s",
        "-",
        median([o.healthy_s for o in es_b]),
        median([o.healthy_s for o in nv_c]),
    )
    table.add("mix / all healthy (each worker's own (a))", "<= 1.1", es_ratio, nv_ratio)
    table.add(
        f"requests per offline connection in {window_s:.0f} s",
        "-",
        offline_req,
        _per(nv_c, "o", "requests"),
    )
    table.add("breaker openings per offline connection", "-", opens, "no breaker")
    table.add(
        "requests to offline connections per open interval",
        "<= 6 (5 to trip + 1 probe)",
        per_interval,
        "-",
    )
    table.add(
        "requests per expired-token connection",
        "-",
        _per(es_b, "x", "requests"),
        _per(nv_c, "x", "requests"),
    )
    table.add(
        "re-authorisation notifications per expired connection",
        "exactly 1",
        _per(es_b, "x", "notifications"),
        f"{_per(nv_c, 'x', 'notifications'):.2f} (failure alerts)",
    )
    table.add(
        "unaffected entity types synced on forbidden connections",
        "100%",
        f"{median([o.unaffected_synced for o in es_b]):.0%}",
        f"{median([o.unaffected_synced for o in nv_c]):.0%}",
    )
    for measure, target in zip(_RATE_LIMIT_ROWS, ("0", "-"), strict=True):
        table.add(measure, target, *(_rate_limit_row(measure, runs) for runs in (es_b, nv_c)))
    section.text(
        "Requests are everything the sandbox received from a token in the window (status "
        "endpoint and lists). An open interval is one transition of a breaker (connection or "
        "entity type) to `open`, from the store's `transitions` table; the requests per "
        "interval include the ones that tripped it and each half-open probe. Notifications "
        "for entity-sync are `connection.reauthorization_required` events in the outbox; the "
        "naive worker has only its final-failure alerts (one per failed task, none for the "
        "connection as such)."
    )
    es_b1 = results["es-b1"]
    serial_ratio = median([b.healthy_s / a.healthy_s for a, b in zip(es_a, es_b1, strict=True)])
    serial_inside = median([o.inside_retry_after for o in es_b1])
    serial = section.table(
        Table(["one request at a time per connection (b1)", "default (b)", "b1"])
    )
    serial.add(
        "healthy connections done, in the mix, s",
        median([o.healthy_s for o in es_b]),
        median([o.healthy_s for o in es_b1]),
    )
    serial.add("mix / all healthy (the default's (a))", es_ratio, serial_ratio)
    for measure in _RATE_LIMIT_ROWS:
        serial.add(measure, *(_rate_limit_row(measure, runs) for runs in (es_b, es_b1)))
    section.text(
        "Run (b1) is the mix again with `ENTITY_SYNC_MAX_CONCURRENCY=1`: each connection has "
        "one request in flight at most, from its first request on, instead of one per entity "
        'type up to 4 (docs/operating.md, "Rate and concurrency"; per connection: '
        "`connections limits ID --max-concurrency 1`)."
    )
    inside = median([o.inside_retry_after for o in es_b])
    if inside > 0:
        section.text(
            f"With the default settings entity-sync sent {inside:.0f} request(s) inside "
            "Retry-After windows. After a 429 the connection runs one request at a time until "
            "a full window more passes without one (`one_at_a_time.lua`): while it lasts, no "
            "request is sent beside one that meets the next 429. The first 429 of a connection "
            "cannot be foreseen: the sandbox, like a proxy in front of a slow source, answers "
            "it only after the page's own latency, and a request of another entity type sent "
            "meanwhile lands inside the window it opened (at most one per other in-flight run). "
            f"One request at a time per connection (b1) leaves {serial_inside:.0f}, and "
            f"healthy connections finish {serial_ratio:.2f}x their all-healthy time: the cost "
            "is a connection's entity types read one after another, which is what a connection "
            "with slow pages and many entity types pays."
        )
    if es_ratio > 1.1:
        section.text(
            f"Missed: healthy connections finished {es_ratio:.2f}x later in the mix. Broken "
            "connections still take worker slots for their first attempts, retries and "
            "half-open probes."
        )
    section.text(
        "The naive worker's all-healthy time is shorter than entity-sync's: it sends no "
        "preflight, takes no lease, runs no breaker scripts and reads page numbers without "
        "re-reading page boundaries or tie groups (and so can skip records in a changing "
        "list). The blast-radius measure is each worker against its own baseline."
    )
    summary = [
        f"- Blast radius: healthy completion in the mix / all healthy: entity-sync "
        f"{es_ratio:.2f} (target <= 1.1), naive {nv_ratio:.2f}; offline requests per open "
        f"interval {per_interval:.1f} (target <= 6); re-authorisation notifications per "
        f"expired connection {_per(es_b, 'x', 'notifications'):.2f} (target 1); unaffected "
        f"types synced on forbidden connections "
        f"{median([o.unaffected_synced for o in es_b]):.0%} (target 100%); requests inside "
        f"Retry-After {median([o.inside_retry_after for o in es_b]):.0f} (target 0; naive "
        f"{median([o.inside_retry_after for o in nv_c]):.0f}); with "
        f"ENTITY_SYNC_MAX_CONCURRENCY=1: {serial_inside:.0f} inside, healthy completion "
        f"{serial_ratio:.2f}."
    ]
    return section, summary
