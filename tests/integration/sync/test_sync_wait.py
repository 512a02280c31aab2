"""`entity-sync sync --wait` is never silent: the real CLI in a subprocess (no
terminal), a real worker, the sandbox over HTTP."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from harness.testing.sandbox import running_sandbox
from tests.support import Env, WorkerProcess

pytestmark = pytest.mark.integration

EXIT_DEFERRED = 4


def _lines(out: str, entity: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip().startswith(entity)]


def test_wait_on_an_offline_connection_answers_deferred_with_the_reason_within_a_minute(
    tmp_path: Path, test_redis: Any, worker_factory: list[WorkerProcess]
) -> None:
    with running_sandbox(preset="empty") as sandbox:
        sandbox.put_connection(
            "tok-down", {"sizes": {"assets": 50}, "scenarios": [{"name": "offline"}]}
        )
        env = Env(store_url=f"sqlite:///{tmp_path}/store.db", upstream_url=sandbox.url)
        env.add_connection("down", "tok-down", ("assets",))
        worker_factory.append(WorkerProcess(env, tmp_path / "worker.log").start())
        started = time.monotonic()
        result = env.cli("sync", "down", "--wait")  # the default timeout: 600 s
        took = time.monotonic() - started
    out = result.stdout + result.stderr
    assert result.returncode == EXIT_DEFERRED, out
    assert took < 60, f"answered after {took:.0f} s\n{out}"
    assert "deferred" in result.stdout and "breaker open until" in result.stdout, out
    assert "CONNECTION_OFFLINE" in result.stdout, out
    states = _lines(result.stdout, "assets")
    assert any("breaker open" in line for line in states), out


def test_wait_prints_each_state_change_and_exits_0_when_done(
    tmp_path: Path, test_redis: Any, worker_factory: list[WorkerProcess]
) -> None:
    with running_sandbox(preset="empty") as sandbox:
        sandbox.put_connection(
            "tok-busy",
            {
                "seed": 3,
                "sizes": {"assets": 200, "sites": 120},
                "scenarios": [{"name": "rate_limit", "every": 8, "retry_after_s": 2}],
            },
        )
        sandbox.put_connection("tok-fine", {"seed": 4, "sizes": {"assets": 80}})
        env = Env(
            store_url=f"sqlite:///{tmp_path}/store.db",
            upstream_url=sandbox.url,
            ENTITY_SYNC_PAGE_SIZE="20",
        )
        env.add_connection("busy", "tok-busy", ("assets", "sites"))
        env.add_connection("fine", "tok-fine", ("assets",))
        worker_factory.append(WorkerProcess(env, tmp_path / "worker.log").start())
        fine = env.cli("sync", "fine", "--wait", "--timeout", "60")
        busy = env.cli("sync", "busy", "--wait", "--timeout", "120")
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert any("succeeded" in line for line in _lines(fine.stdout, "assets")), fine.stdout
    assert busy.returncode == 0, busy.stdout + busy.stderr
    for entity in ("assets", "sites"):
        states = _lines(busy.stdout, entity)
        assert len(states) >= 3, busy.stdout  # a line per change of state, not one at the end
        assert "succeeded" in states[-1], busy.stdout
    assert "paused until" in busy.stdout, busy.stdout  # the 429s were shown as they came
