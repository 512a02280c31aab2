"""Schedules and fairness: real beat processes, a real worker, real Redis and store."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from harness.testing.sandbox import running_sandbox
from tests.support import ROOT, Env, WorkerProcess, wait_for, wait_for_runs
from worker.client import EntitySyncClient
from worker.jobs import SYNC_QUEUE
from worker.store import Connection, RunStatus
from worker.timeutil import parse_instant

pytestmark = pytest.mark.integration


def _beat(env: Env, tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    log = (tmp_path / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "beat", "--loglevel=INFO",
         f"--schedule={tmp_path / name}.schedule"],
        env=env.process_env(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip


def test_two_hundred_connections_every_slot_once_with_two_beats(
    tmp_path: Path, test_redis: Any, worker_factory: list[WorkerProcess]
) -> None:
    env = Env(
        store_url=f"sqlite:///{tmp_path}/store.db",
        upstream_url="http://127.0.0.1:9",
        ENTITY_SYNC_SYNC_INTERVAL_SECONDS="2",
        ENTITY_SYNC_SCHEDULE_ENABLED="true",
        # Slots of 2 s need a tick at least that often (the default is 5 s).
        ENTITY_SYNC_HOUSEKEEPING_TICK_SECONDS="1",
    )
    store = env.store()
    for n in range(200):
        store.add_connection(Connection(id=f"c{n:03d}", name=f"c{n}", entity_types=("assets",)))
    # Only housekeeping runs here: the scheduled syncs pile up in the sync
    # queue, where the test counts them.
    worker = WorkerProcess(env, tmp_path / "worker.log", beat=False, concurrency=2)
    worker.queues = "housekeeping"
    worker_factory.append(worker.start())
    beats = [_beat(env, tmp_path, f"beat{n}") for n in range(2)]
    try:
        time.sleep(60)
    finally:
        for beat in beats:
            beat.terminate()
            beat.wait(20)
    time.sleep(2)  # let the last schedule pass finish
    log = store.schedule_log()
    slots: dict[str, list[int]] = defaultdict(list)
    enqueued = 0
    for connection_id, slot, outcome in log:
        assert outcome == "enqueued" or outcome.startswith("merged into "), outcome
        enqueued += outcome == "enqueued"
        slots[connection_id].append(slot)
    assert len(slots) == 200
    for connection_id, seen in slots.items():
        # Every slot accounted for exactly once: enqueued, or (when the
        # scheduler ran late on this loaded machine) merged into the next.
        assert seen == list(range(seen[0], seen[-1] + 1)), f"{connection_id}: {seen}"
        assert len(seen) >= 25, f"{connection_id}: only {len(seen)} slots in a minute"
    assert enqueued >= 0.9 * len(log), f"only {enqueued} of {len(log)} slots enqueued"
    queued = test_redis.llen(SYNC_QUEUE)
    assert queued == enqueued, "one message per enqueued slot, none twice"


def test_a_backfill_does_not_delay_a_manual_sync_beyond_one_task(
    tmp_path: Path, test_redis: Any, worker_factory: list[WorkerProcess]
) -> None:
    with running_sandbox(preset="empty") as sandbox:
        big, small = f"big-{uuid.uuid4().hex[:6]}", f"small-{uuid.uuid4().hex[:6]}"
        sandbox.put_connection(big, {"seed": 1, "default_size": 6000, "latency_ms": 15})
        sandbox.put_connection(small, {"seed": 2, "sizes": {"assets": 50}})
        env = Env(
            store_url=f"sqlite:///{tmp_path}/store.db",
            upstream_url=sandbox.url,
            ENTITY_SYNC_PAGES_PER_TASK="5",
        )
        types = ("sites", "locations", "assets", "work-orders")
        env.add_connection("backfill", big, types)
        env.add_connection("manual", small, ("assets",))
        # No beat: no scheduled syncs mixing in, only the two requests.
        worker = WorkerProcess(env, tmp_path / "worker.log", concurrency=2, beat=False)
        worker_factory.append(worker.start())
        client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
        client.sync_connection("backfill", full=True)
        store = env.store()
        wait_for(
            lambda: sum(r.pages for r in store.recent_runs()) >= 20, 60, "the backfill", worker
        )
        enqueued = time.time()
        [run] = wait_for_runs(store, client.sync_connection("manual"), ["assets"], timeout_s=60)
        assert run.status == RunStatus.SUCCEEDED
        waited = parse_instant(run.started_at).timestamp() - enqueued
        durations = [
            float(m) for m in re.findall(
                r"sync_entity\[[^\]]+\] succeeded in ([0-9.]+)s", worker.log()
            )
        ]  # fmt: skip
        longest_task = max(durations)
        assert waited <= longest_task + 1.0, (waited, longest_task)
        backfill_runs = [r for r in store.recent_runs() if r.connection_id == "backfill"]
        assert any(r.status == RunStatus.RUNNING for r in backfill_runs), "still backfilling"
