"""`entity-sync workers --processes 2`, started the way docs/operating.md says, with real
Celery workers and the test run's own Redis: both processes take work, a dead
one is started again, and one SIGTERM to the supervisor ends them all."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from harness.testing.processes import kill_group, spawn
from harness.testing.sandbox import running_sandbox
from tests.support import REDIS_URL, Env, wait_for, wait_for_runs
from worker.client import EntitySyncClient

pytestmark = pytest.mark.integration

CONNECTIONS = 4
ENTITY_TYPES = ("assets", "work-orders")


def child_pids(parent: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True, check=False
    ).stdout
    return [int(pid) for pid in out.split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def tasks_done_by(nodes: list[str]) -> dict[str, int]:
    """Sync tasks each node has taken since it started (Celery's own per-worker stats)."""
    probe = Celery(broker=REDIS_URL)
    try:
        replies: dict[str, Any] = probe.control.inspect(nodes, timeout=10).stats() or {}
    finally:
        probe.close()
    return {
        node: int(reply.get("total", {}).get("entity_sync.sync_entity", 0))
        for node, reply in replies.items()
    }


def answered_by_all(nodes: list[str]) -> dict[str, int] | None:
    """``tasks_done_by`` once every node answered, else None (asked again by the caller)."""
    done = tasks_done_by(nodes)
    return done if set(done) == set(nodes) else None


def test_two_worker_processes_share_the_work_and_sigterm_ends_them_all(
    test_redis: Any, tmp_path: Path
) -> None:
    workers_log = tmp_path / "workers.log"
    prefix = f"t{uuid.uuid4().hex[:6]}"
    host = socket.gethostname()  # what Celery's %h expands to
    nodes = [f"{prefix}1@{host}", f"{prefix}2@{host}"]
    with running_sandbox(preset="empty") as sandbox:
        env = Env(store_url=f"sqlite:///{tmp_path}/store.db", upstream_url=sandbox.url)
        for i in range(CONNECTIONS):
            token = f"tok-{uuid.uuid4().hex[:10]}"
            # 30 ms a page: runs overlap, so a process with two slots cannot take them all.
            sandbox.put_connection(
                token,
                {
                    "seed": i,
                    "sizes": dict.fromkeys(ENTITY_TYPES, 500),
                    "scenarios": [{"name": "slow", "latency_ms": 30, "lists_only": True}],
                },
            )
            env.add_connection(f"c{i}", token, ENTITY_TYPES)
        # docs/operating.md's command, with two slots each so that both must take work.
        command = [
            sys.executable, "-m", "worker.ops.cli", "workers", "--processes", "2",
            "--name-prefix", prefix, "--", "--concurrency=2",
        ]  # fmt: skip
        supervisor = spawn(command, env=env.process_env(), log_path=workers_log)
        seen: list[int] = []
        try:
            wait_for(lambda: workers_log.read_bytes().count(b"ready.") >= 2, 90, "2 workers ready")
            client = EntitySyncClient(REDIS_URL)
            requests = [client.sync_connection(f"c{i}") for i in range(CONNECTIONS)]
            store = env.store()
            for request in requests:
                runs = wait_for_runs(store, request, ENTITY_TYPES, timeout_s=180)
                assert {str(r.status) for r in runs} == {"succeeded"}, runs
            # Asked again until both answer: a busy machine may miss the first reply window.
            done = wait_for(lambda: answered_by_all(nodes), 90, "both answering `inspect stats`")
            assert all(count > 0 for count in done.values()), f"a worker took no work: {done}"

            # A worker that dies is started again under its name.
            first = child_pids(supervisor.pid)
            seen += first
            assert len(first) == 2, first
            victim = first[0]
            subprocess.run(["kill", "-KILL", str(victim)], check=True)
            wait_for(lambda: workers_log.read_bytes().count(b"ready.") >= 3, 90, "restarted")
            again = child_pids(supervisor.pid)
            seen += again
            assert len(again) == 2 and victim not in again, (first, again)
            wait_for(lambda: answered_by_all(nodes), 90, "both answering again")

            # One SIGTERM to the supervisor (what systemd or `docker stop` sends)
            # ends every worker with a warm shutdown, then the supervisor.
            supervisor.send_signal(signal.SIGTERM)
            assert supervisor.wait(90) == 0, workers_log.read_text()[-4000:]
            wait_for(lambda: not any(alive(pid) for pid in again), 10, "workers gone")
            log = workers_log.read_text()
            assert log.count("Warm shutdown") == 2, log[-4000:]  # Celery's own, one per worker
        finally:
            kill_group(supervisor)  # the workers follow it (they die with their parent)
            for pid in seen:
                if alive(pid):
                    subprocess.run(["kill", "-KILL", str(pid)], check=False)
