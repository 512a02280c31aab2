"""Load: many connections registered and thousands of jobs enqueued at once.

Each connection serves demo-like data (the demo's entity types, smaller):
five entity types, one to two pages each. Every job is one
``entity_sync.sync_entity`` sent at the same moment. Measured: that every job
completes, the longest wait from enqueue to its run's start (starvation), the
workers' resident memory over time, Redis's memory, and the store against
the upstream for every pair.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

from chaos.common import apply_audit
from chaos.harness import CaseResult, default_settings, log, stack
from worker.jobs import SYNC_ENTITY
from worker.store import RunStatus

ENTITIES = ("sites", "locations", "assets", "work-orders", "users")
SIZES = {"sites": 12, "locations": 40, "assets": 150, "work-orders": 180, "users": 60}


def run(*, connections: int = 200, timeout: float = 900) -> CaseResult:
    jobs = connections * len(ENTITIES)
    result = CaseResult(
        fault=f"Load: {connections} connections, {jobs} jobs at once",
        scale=f"{connections} connections x {len(ENTITIES)} entity types"
        + (" (shortened; --long: 1,000 / 5,000)" if connections < 1000 else ""),
    )
    # Jobs wait in line for a minute and more here: leases and the stalled-run
    # check are set well above that, as production's are above its queue waits.
    settings = default_settings(
        ENTITY_SYNC_LEASE_TTL="60",
        ENTITY_SYNC_STALLED_RUN_SECONDS="120",
        ENTITY_SYNC_VISIBILITY_TIMEOUT="600",
    )
    with stack(**settings) as s:
        tokens = {}
        for n in range(connections):
            cid = f"load-{n:04d}"
            tokens[cid] = s.connection(cid, {"seed": n, "sizes": SIZES}, ENTITIES)
        workers = [s.worker(f"w{n}", pool="threads", concurrency=16, beat=n == 0) for n in range(2)]
        rss: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                rss.append(max(w.rss_bytes() for w in workers))
                stop.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        client = s.client()
        enqueued_at = time.time()
        for cid in tokens:
            for entity in ENTITIES:
                client.send(SYNC_ENTITY, {"connection_id": cid, "entity_type": entity})
        send_s = time.time() - enqueued_at
        log(f"load: {jobs} jobs enqueued in {send_s:.1f}s")
        deadline = time.monotonic() + timeout
        runs = []
        while time.monotonic() < deadline:
            runs = [r for r in s.store.recent_runs(limit=jobs * 3) if r.connection_id]
            ended = [r for r in runs if r.status in (RunStatus.SUCCEEDED, RunStatus.FAILED)]
            if len(ended) >= jobs:
                break
            time.sleep(2)
        took = time.time() - enqueued_at
        stop.set()
        sampler.join()
        redis_mem = s.redis.used_memory()
        done = {(r.connection_id, r.entity_type) for r in runs if r.status == RunStatus.SUCCEEDED}
        failed = [r for r in runs if r.status == RunStatus.FAILED]
        waits = [_start(r.started_at) - enqueued_at for r in runs if r.started_at]
        for cid, token in tokens.items():
            apply_audit(result, s.audit(cid, token, ENTITIES))
        result.injected = jobs
        all_done = len(done) == jobs
        result.survived = all_done and not failed and result.records_lost == 0
        result.outcome = (
            f"{len(done)}/{jobs} jobs succeeded in {took:.0f} s ({jobs / took:.0f} jobs/s); "
            f"longest wait to start {max(waits, default=0):.0f} s; "
            f"worker RSS {rss[0] // 2**20 if rss else 0} -> peak {max(rss, default=0) // 2**20} MiB"
            f" (per worker, 16 threads); Redis used_memory peak "
            f"{redis_mem['used_memory_peak'] // 2**20} MiB"
        )
        result.notes.append(
            f"2 thread-pool workers x 16; jobs enqueued in {send_s:.1f} s; "
            f"{len(failed)} failed runs; parked for a concurrency slot and resumed: "
            f"{sum(1 for r in runs if r.tasks > 1)} runs took more than one task"
        )
        if rss:
            tail = rss[len(rss) // 2 :]
            result.notes.append(
                f"worker RSS samples: first {rss[0] // 2**20} MiB, median of the second half "
                f"{sorted(tail)[len(tail) // 2] // 2**20} MiB, last {rss[-1] // 2**20} MiB"
            )
    return result


def _start(instant: str) -> float:
    return datetime.fromisoformat(instant.replace("Z", "+00:00")).timestamp()
