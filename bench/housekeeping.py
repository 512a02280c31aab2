"""7. Housekeeping cost: broker messages per hour, idle and busy, before and after the tick.

*Before*: the five beat entries housekeeping used to have (``bench.legacy_beat``),
two of them every second. *After*: the one ``entity_sync.housekeeping.tick``
every ``ENTITY_SYNC_HOUSEKEEPING_TICK_SECONDS`` (5 s). Both run for real: a
private ``redis-server`` (broker database 11, coordination 10), one worker, a
standalone beat. Every command on the broker database is read with Redis
``MONITOR`` over a bounded window and scaled to an hour: task messages (a
``LPUSH`` onto a queue, by task name) and Celery event publishes.

*Idle*: no connection registered. *Busy*: 20 connections on the sandbox,
scheduled every 30 s, two entity types each, one of them answering 429 with
``Retry-After: 2`` now and then (so jobs park and resume). Layouts alternate
run by run; figures are medians.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import Counter

import redis

from bench.common import OUT_DIR, BenchEnv, Proc, fresh_store, median, say, start_worker
from bench.report import Section, Table
from chaos.infra import RedisServer
from harness.testing.sandbox import SandboxHandle, running_sandbox

LAYOUTS = {"before (5 entries)": "bench.legacy_beat", "after (1 tick)": "worker"}
CONNECTIONS = 20
ENTITY_TYPES = ("assets", "sites")
_TASK = re.compile(rb'"task":\s*"([^"]+)"')


class BrokerCounter:
    """Counts task messages and event publishes on one Redis database with MONITOR."""

    def __init__(self, url: str, db: int) -> None:
        self._client = redis.Redis.from_url(url)
        self._db = db
        self.tasks: Counter[str] = Counter()
        self.events = 0
        self.commands = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BrokerCounter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._client.set("bench:housekeeping:stop", "1")  # wakes MONITOR's listen()
        self._thread.join(10)

    def _run(self) -> None:
        with self._client.monitor() as monitor:
            for entry in monitor.listen():
                if self._stop.is_set():
                    return
                if int(entry.get("db", -1)) != self._db:
                    continue
                command = str(entry.get("command", ""))
                self.commands += 1
                verb = command.split(" ", 1)[0].upper()
                if verb == "LPUSH":
                    match = _TASK.search(command.encode())
                    self.tasks[match.group(1).decode() if match else "?"] += 1
                elif verb == "PUBLISH":
                    self.events += 1


def _housekeeping(tasks: Counter[str]) -> int:
    return sum(n for name, n in tasks.items() if name.startswith("entity_sync.housekeeping."))


def _measure(
    base: str, sandbox: SandboxHandle, layout: str, busy: bool, window_s: float, rep: int
) -> dict[str, float]:
    redis.Redis.from_url(base).flushall()
    with fresh_store("sqlite", f"housekeeping-{rep}") as spec:
        env = BenchEnv(
            store_url=spec.url,
            upstream_url=sandbox.url,
            redis=f"{base}/10",
            broker=f"{base}/11",
            extra={
                "ENTITY_SYNC_SCHEDULE_ENABLED": "true" if busy else "false",
                "ENTITY_SYNC_SYNC_INTERVAL_SECONDS": "30",
                "ENTITY_SYNC_PAGE_SIZE": "20",
            },
        )
        if busy:
            store = env.store()
            env.add_connections(
                store, [(f"h{i:02d}", f"tok-h{i:02d}", ENTITY_TYPES) for i in range(CONNECTIONS)]
            )
            store.drop_connection()
        tag = f"housekeeping-{'busy' if busy else 'idle'}-{rep}"
        worker = start_worker(env, tag, beat=False, concurrency=8)
        schedule = OUT_DIR / "beat" / f"{tag}.schedule"
        schedule.parent.mkdir(parents=True, exist_ok=True)
        schedule.unlink(missing_ok=True)
        command = [sys.executable, "-m", "celery", "-A", LAYOUTS[layout], "beat",
                   "--loglevel=INFO", f"--schedule={schedule}"]  # fmt: skip
        beat = Proc(command, env.process_env(), OUT_DIR / "logs" / f"{tag}-beat.log")
        try:
            beat.start(ready=b"beat: Starting")
            time.sleep(3.0)  # past start-up: count the steady state
            with BrokerCounter(base, 11) as counter:
                time.sleep(window_s)
        finally:
            beat.stop()
            worker.stop()
    per_hour = 3600.0 / window_s
    return {
        "housekeeping": _housekeeping(counter.tasks) * per_hour,
        "tasks": sum(counter.tasks.values()) * per_hour,
        "resumes": counter.tasks["entity_sync.resume_parked_job"] * per_hour,
        "events": counter.events * per_hour,
        "commands": counter.commands * per_hour,
    }


def run(*, quick: bool, runs: int) -> tuple[Section, list[str]]:
    window_s = 15.0 if quick else 60.0  # full: two schedule slots per connection
    section = Section(
        "housekeeping",
        "7. Housekeeping cost: broker messages per hour",
        f"python -m bench --only housekeeping{' --quick' if quick else ''}",
    )
    results: dict[tuple[str, bool], list[dict[str, float]]] = {}
    with RedisServer() as server, running_sandbox(preset="empty") as sandbox:
        base = server.base_url
        for i in range(CONNECTIONS):
            scenarios = (
                [{"name": "rate_limit", "every": 15, "retry_after_s": 2}] if i % 4 == 0 else []
            )
            sandbox.put_connection(
                f"tok-h{i:02d}",
                {"seed": i, "sizes": dict.fromkeys(ENTITY_TYPES, 60), "scenarios": scenarios},
            )
        for rep in range(runs):
            for busy in (False, True):
                for layout in LAYOUTS:
                    say(f"housekeeping: {layout}, {'busy' if busy else 'idle'}, run {rep + 1}")
                    result = _measure(base, sandbox, layout, busy, window_s, rep)
                    results.setdefault((layout, busy), []).append(result)

    def med(layout: str, busy: bool, key: str) -> float:
        return median([r[key] for r in results[(layout, busy)]])

    section.text(
        f"{runs} run(s) of {window_s:g} s per cell, layouts interleaved; medians, scaled to "
        "an hour. *Housekeeping* counts the `entity_sync.housekeeping.*` task messages "
        "beat sends; *worker's own resumes* the countdowns a worker sends for jobs it "
        "parked for a short while (no beat needed); *all tasks* adds syncs, "
        "continuations and webhooks, so it moves with how much syncing the window "
        "caught; *events* "
        "are Celery's task-event publishes (Flower's feed); *broker commands* is every "
        "command on the broker database, the worker's 1 s BRPOP polling included."
    )
    table = section.table(
        Table(
            [
                "load",
                "layout",
                "housekeeping msgs/h",
                "worker's own resumes/h",
                "all task msgs/h",
                "events/h",
                "broker commands/h",
            ]
        )  # fmt: skip
    )
    lines = []
    before, after = LAYOUTS
    for busy in (False, True):
        load = "busy" if busy else "idle"
        for layout in LAYOUTS:
            table.add(
                load,
                layout,
                med(layout, busy, "housekeeping"),
                med(layout, busy, "resumes"),
                med(layout, busy, "tasks"),
                med(layout, busy, "events"),
                med(layout, busy, "commands"),
            )
        ratio = med(before, busy, "housekeeping") / max(1.0, med(after, busy, "housekeeping"))
        lines.append(
            f"- Housekeeping messages, {load}: {med(before, busy, 'housekeeping'):,.0f}/h "
            f"before, {med(after, busy, 'housekeeping'):,.0f}/h after ({ratio:.1f}x fewer)."
        )
    section.text("\n".join(lines))
    return section, lines
