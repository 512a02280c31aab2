"""Beat is optional for short pauses: a worker alone finishes a rate-limited sync,
and says once in its log that beat is missing (and nothing when it is there)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from harness.testing.sandbox import running_sandbox
from tests.support import Env, WorkerProcess, wait_for, wait_for_runs
from worker.client import EntitySyncClient
from worker.store import RunStatus

pytestmark = pytest.mark.integration

TOKEN = "beat-optional-token-7c21"
MISSING = "celery beat is not running"


def _env(tmp_path: Path, upstream_url: str) -> Env:
    return Env(
        store_url=f"sqlite:///{tmp_path}/store.db",
        upstream_url=upstream_url,
        ENTITY_SYNC_PAGE_SIZE="20",
        ENTITY_SYNC_BEAT_STALE_SECONDS="4",
    )


def test_a_worker_without_beat_finishes_a_rate_limited_sync(
    tmp_path: Path, test_redis: Any, worker_factory: list[WorkerProcess]
) -> None:
    # Under 300 records: no bulk-import tie group (harness/sandbox/records.py).
    sizes = {"assets": 280, "work-orders": 260}
    with running_sandbox(preset="empty") as sandbox:
        sandbox.put_connection(
            TOKEN,
            {
                "seed": 7,
                "sizes": sizes,
                # Every 10th request: 429 with Retry-After: 2, and 429 inside the window.
                "scenarios": [{"name": "rate_limit", "every": 10, "retry_after_s": 2}],
            },
        )
        env = _env(tmp_path, sandbox.url)
        env.add_connection("limited", TOKEN, tuple(sizes))
        worker = WorkerProcess(env, tmp_path / "worker.log", beat=False).start()
        worker_factory.append(worker)
        store = env.store()
        request = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"]).sync_connection("limited")
        runs = wait_for_runs(store, request, list(sizes), timeout_s=120)
        assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * 2, runs
        for entity, size in sizes.items():
            assert store.entity_statuses("limited")  # the pair exists
            live = [s for s in store.entity_statuses("limited") if s.entity_type == entity]
            assert live[0].records == size, (entity, live[0].records)
        stats = sandbox.token_stats(TOKEN)
        assert stats["total"] > 0
        answered_429 = [r for r in stats["requests"] if r.get("status") == 429]
        assert answered_429, "the scenario never fired: nothing was tested"
        assert store.parked_jobs("limited") == []
        # No beat ran: the worker noticed, and said so exactly once.
        wait_for(lambda: MISSING in worker.log(), 30, "the missing-beat warning", worker)
        time.sleep(6)  # more checks pass: still one warning
        assert worker.log().count(MISSING) == 1, worker.log()[-3000:]


def test_no_warning_while_beat_runs(
    tmp_path: Path, test_redis: Any, worker_factory: list[WorkerProcess]
) -> None:
    env = _env(tmp_path, "http://127.0.0.1:9")
    worker = WorkerProcess(env, tmp_path / "worker.log", beat=True).start()
    worker_factory.append(worker)
    time.sleep(12)  # three staleness windows
    assert MISSING not in worker.log()
    assert test_redis.get("entity_sync:beat:heartbeat") is not None


def test_status_dashboard_and_wait_say_when_parked_work_waits_for_beat(
    tmp_path: Path, test_redis: Any, worker_factory: list[WorkerProcess]
) -> None:
    from worker.ops.dashboard.data import build_grid
    from worker.runtime import Runtime

    with running_sandbox(preset="empty") as sandbox:
        # A 429 asking for two minutes: longer than a worker resumes by itself.
        sandbox.put_connection(
            TOKEN,
            {"sizes": {"assets": 30}, "scenarios": [{"name": "rate_limit", "retry_after_s": 120}]},
        )
        env = _env(tmp_path, sandbox.url)
        env.add_connection("slow", TOKEN, ("assets",))
        worker_factory.append(WorkerProcess(env, tmp_path / "worker.log", beat=False).start())
        waited = env.cli("sync", "slow", "--wait", "--timeout", "60")
        assert waited.returncode == 4, waited.stdout + waited.stderr
        assert "beat not running" in waited.stdout, waited.stdout
        assert "will not resume until beat runs" in waited.stdout, waited.stdout
        assert len(env.store().parked_jobs("slow")) == 1

        status = env.cli("status")
        assert status.returncode == 0, status.stderr
        assert "1 parked job(s) will not resume until beat runs" in status.stdout, status.stdout
        as_json = env.cli("status", "--json")
        assert "will not resume until beat runs" in as_json.stderr

        settings = env.settings()
        grid = build_grid(env.store(), Runtime(settings=settings).breaker, default_interval_s=900.0)
        assert grid.beat_notice and "will not resume until beat runs" in grid.beat_notice
        assert grid.as_json()["beat_notice"] == grid.beat_notice
