"""5. Redis cost: commands and round trips per upstream request.

Measured on a private ``redis-server`` (a free port, no persistence) so that
INFO commandstats sees only this worker: the machine's Redis is shared with
other test runs. Coordination (breakers, leases, limits, caches) uses database
10 and the Celery broker database 11, so the worker-side counter
(``bench.instrumented_worker redis``) tells them apart. No embedded beat: its
housekeeping would add broker traffic unrelated to the requests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import redis

from bench.common import (
    OUT_DIR,
    BenchEnv,
    enqueue_all,
    fresh_store,
    median,
    say,
    start_worker,
    wait_runs,
)
from bench.report import Section, Table
from bench.throughput import traced_shape, warm
from chaos.infra import RedisServer
from harness.testing.sandbox import running_sandbox


def _commandstats(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def _counts(path: Path) -> dict[str, dict[str, int]]:
    for _ in range(50):
        try:
            data: dict[str, dict[str, int]] = json.loads(path.read_text())
            return data
        except (OSError, ValueError):
            time.sleep(0.1)
    return {"trips": {}, "commands": {}, "names": {}}


def run(*, quick: bool, runs: int) -> tuple[Section, list[str]]:
    shape = traced_shape(quick=quick)
    section = Section(
        "redis_cost",
        "5. Redis cost per upstream request",
        f"python -m bench --only redis_cost{' --quick' if quick else ''}",
    )
    if shutil.which("redis-server") is None:
        section.text("Not measured: no `redis-server` binary to run a private Redis.")
        return section, ["- Redis cost: not measured (no redis-server binary)."]
    server = RedisServer().start()  # of its own: INFO commandstats counts this bench only
    rows: list[dict[str, float]] = []
    names_total: Counter[str] = Counter()
    try:
        base = server.base_url
        admin = redis.Redis.from_url(base)
        with running_sandbox(config=shape.config()) as sandbox:
            warm(sandbox, [shape.token(i) for i in range(shape.connections)], shape.entity_types)
            for rep in range(runs):
                admin.flushall()
                counts_path = OUT_DIR / f"redis-counts-{rep}.json"
                counts_path.unlink(missing_ok=True)
                with fresh_store("sqlite", f"redis-cost-{rep}") as spec:
                    env = BenchEnv(
                        store_url=spec.url,
                        upstream_url=sandbox.url,
                        redis=f"{base}/10",
                        broker=f"{base}/11",
                    )
                    store = env.store()
                    ids = shape.register(env, store, "r")
                    worker = start_worker(
                        env,
                        f"redis-cost-{rep}",
                        beat=False,
                        prefix=("bench.instrumented_worker", "redis", str(counts_path)),
                    )
                    try:
                        time.sleep(1.0)
                        before, server0 = _counts(counts_path), _commandstats(admin)
                        sandbox.reset_stats()
                        _, requests = enqueue_all(env, ids)
                        wait_runs(
                            store,
                            requests,
                            shape.connections * len(shape.entity_types),
                            timeout_s=600,
                        )
                        time.sleep(1.2)  # one more dump of the counters
                        after, server1 = _counts(counts_path), _commandstats(admin)
                        upstream = sum(
                            int(t.get("total", 0)) for t in sandbox.stats()["tokens"].values()
                        )
                    finally:
                        worker.stop()
                    store.drop_connection()

                def delta(kind: str, db: str, a: dict = after, b: dict = before) -> int:
                    return int(a[kind].get(db, 0)) - int(b[kind].get(db, 0))

                server_delta = server1 - server0
                server_delta.pop("info", None)  # our own INFO calls
                names = Counter(after["names"]) - Counter(before["names"])
                names_total.update(names)
                rows.append(
                    {
                        "upstream": upstream,
                        "coord_trips": delta("trips", "10") / upstream,
                        "coord_commands": delta("commands", "10") / upstream,
                        "broker_trips": delta("trips", "11") / upstream,
                        "server_commands": sum(server_delta.values()) / upstream,
                        "evalsha": (server_delta["evalsha"] + server_delta["eval"]) / upstream,
                    }
                )
                say(f"redis cost run {rep + 1}: {rows[-1]}")
    finally:
        server.kill()
    section.text(
        f"{shape.total:,} records ({shape.connections} connections x {len(shape.entity_types)} "
        "entity types), one `--pool=threads --concurrency=16` worker, SQLite. Upstream "
        "requests are what the sandbox received (status preflights and list pages). A round "
        "trip is one write to Redis answered by one read (a pipeline is one); Lua scripts "
        "are one round trip each. Server-side commands come from INFO commandstats on the "
        "private server and include the commands run inside Lua scripts. "
        f"Medians of {runs} runs."
    )
    table = section.table(Table(["per upstream request", "target", "median"]))
    table.add("upstream requests per run", "-", median([r["upstream"] for r in rows]))
    table.add(
        "coordination round trips (db 10: breakers, leases, limits)",
        "<= 1.2",
        median([r["coord_trips"] for r in rows]),
    )
    table.add("coordination commands sent", "-", median([r["coord_commands"] for r in rows]))
    table.add("Lua script calls (EVALSHA/EVAL)", "-", median([r["evalsha"] for r in rows]))
    table.add(
        "broker round trips (db 11: Celery/kombu)", "-", median([r["broker_trips"] for r in rows])
    )
    table.add(
        "server-side commands, all (commandstats, Lua-internal included)",
        "-",
        median([r["server_commands"] for r in rows]),
    )
    top = section.table(Table(["command sent by the worker (db)", "per upstream request"]))
    upstream_all = sum(r["upstream"] for r in rows)
    for name, count in names_total.most_common(10):
        db, command = name.split(" ", 1)
        top.add(f"`{command}` (db {db})", count / upstream_all)
    trips = median([r["coord_trips"] for r in rows])
    section.text(
        "Per page the guard makes one round trip: the script that records a request's "
        "success also admits the next request (`record_admit.lua`); a probe's success and "
        "every failure are recorded at once. The lease and slot renewals run at most every "
        "`LEASE_TTL / 3`. The rest is per task and per run, amortised over a slice's pages "
        "(at most `PAGES_PER_TASK` = 50): one pipeline counting the delivery, taking the "
        "lease and a concurrency slot and reading the preflight cache; the preflight's "
        "second read of its cache (`EXISTS`, just before it asks) and its write; the slice's "
        "first admission; one pipeline recording its last success and freeing the slot (and "
        "the lease, when the run is done); the retry budget; and per process the first "
        "`EVAL` of each script and one handshake round trip (HELLO and SELECT written "
        "together) for each pooled connection. "
        + (
            f"Missed: {trips:.2f} > 1.2. With about 40 requests per run here, the fixed part "
            "per task is what is left."
            if trips > 1.2
            else "Within the target."
        )
    )
    summary = [
        f"- Redis: {trips:.2f} coordination round trips per upstream request (target <= 1.2)."
    ]
    return section, summary


__all__ = ["run", "subprocess"]
