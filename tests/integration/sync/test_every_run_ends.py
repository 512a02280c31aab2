"""Every run ends: an exception nobody expected, at any step, ends the run ``failed``.

A real worker (``tests/fault_worker.py``) raises OverflowError at one step of
the runs of one connection each, on SQLite and PostgreSQL. Each run must end
``failed`` with kind ``internal`` and a redacted message, free its lease, send
one Sentry event, and ``entity-sync sync --wait`` must answer with exit status
1 (the work failed), while a healthy connection beside them syncs.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from harness.testing.sandbox import SandboxHandle, running_sandbox
from tests.fault_worker import STEPS
from tests.integration.observability.test_sentry import IngestStandIn
from tests.support import Env, WorkerProcess, wait_for
from worker.coordination.lease import Leases
from worker.store import RunStatus

pytestmark = pytest.mark.integration

EXIT_FAILED = 1  # README: 1 the work failed


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(preset="empty") as handle:
        yield handle


def test_an_unexpected_exception_at_any_step_ends_the_run(
    store_url: str,
    sandbox: SandboxHandle,
    test_redis: Any,
    worker_factory: list[WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = f"tok-{uuid.uuid4().hex[:16]}"
    refused = f"tok-unknown-{uuid.uuid4().hex[:12]}"  # the sandbox answers 401: a transition
    sandbox.put_connection(token, {"seed": 3, "sizes": {"assets": 40}, "latency_ms": 1})
    ingest = IngestStandIn()
    try:
        env = Env(
            store_url=store_url,
            upstream_url=sandbox.url,
            ENTITY_SYNC_SENTRY_DSN=ingest.dsn,
            ENTITY_SYNC_PAGE_SIZE="10",
        )
        faults = {f"fault-{step.replace('_', '-')}": step for step in STEPS}
        for connection_id, step in faults.items():
            env.add_connection(connection_id, refused if step == "event" else token)
        env.add_connection("healthy", token)
        monkeypatch.setenv("FAULT_WORKER_FAULTS", json.dumps(faults))
        monkeypatch.setenv("FAULT_WORKER_SECRET", token)
        worker = WorkerProcess(env, tmp_path / "worker.log", launcher="tests.fault_worker")
        worker_factory.append(worker.start())

        def sync(connection_id: str) -> subprocess.CompletedProcess[str]:
            return env.cli("sync", connection_id, "--wait", "--timeout", "120")

        ids = [*faults, "healthy"]
        with ThreadPoolExecutor(len(ids)) as pool:
            answers = dict(zip(ids, pool.map(sync, ids), strict=True))

        assert answers["healthy"].returncode == 0, answers["healthy"]
        store = env.store()
        leases = Leases(test_redis, ttl_s=60)
        runs = store.recent_runs(limit=100)
        for connection_id, step in faults.items():
            answer = answers[connection_id]
            assert answer.returncode == EXIT_FAILED, (step, answer.stdout, answer.stderr)
            [run] = [r for r in runs if r.connection_id == connection_id]
            assert run.status == RunStatus.FAILED, (step, run)
            assert run.error_kind == "internal", (step, run)
            assert f"injected at {step}" in (run.error_message or ""), (step, run)
            assert len(run.error_message or "") <= 2000, step
            assert token not in (run.error_message or ""), step
            assert leases.holder(connection_id, "assets") is None, step
            assert token not in answer.stdout + answer.stderr, step

        def reported() -> dict[str, int]:
            """Sentry events per step (named in the redacted message or exception)."""
            counts: dict[str, int] = {}
            for event in ingest.items("event"):
                text = json.dumps(event)
                for step in STEPS:
                    if f"injected at {step}" in text:
                        counts[step] = counts.get(step, 0) + 1
            return counts

        wait_for(lambda: set(reported()) >= set(STEPS), 30, "a Sentry event per run", worker)
        worker.stop()  # flushes what is queued
        assert reported() == dict.fromkeys(STEPS, 1)
        assert token.encode() not in b"\n".join(ingest.bodies)
        assert token not in worker.log()
    finally:
        ingest.stop()
