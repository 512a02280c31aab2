"""The sync path end to end: real worker, real Redis, the sandbox over HTTP, both stores."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.testing.sandbox import SandboxHandle, running_sandbox
from tests.support import Env, WorkerProcess, wait_for, wait_for_runs
from worker.client import EntitySyncClient
from worker.jobs import SYNC_ENTITY
from worker.store import Run, RunStatus, SqlStore
from worker.timeutil import canonical_instant

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(preset="empty") as handle:
        yield handle


def _token() -> str:
    return f"tok-{uuid.uuid4().hex[:10]}"


def _env(store_url: str, sandbox: SandboxHandle, **extra: str) -> Env:
    return Env(store_url=store_url, upstream_url=sandbox.url, **extra)


def _sync(env: Env, connection_id: str, *, full: bool = False, timeout: float = 120) -> list[Run]:
    client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
    store = env.store()
    entity_types = store.get_connection(connection_id).entity_types
    request_id = client.sync_connection(connection_id, full=full)
    return wait_for_runs(store, request_id, entity_types, timeout_s=timeout)


def assert_store_equals_upstream(
    store: SqlStore, sandbox: SandboxHandle, connection_id: str, token: str, entity: str
) -> None:
    truth = {r["key"]: r for r in sandbox.truth(token, entity)}
    stored = {r.key: r for r in store.records(connection_id, entity)}
    assert sorted(stored) == sorted(truth), "keys differ"
    for key, record in truth.items():
        copy = stored[key]
        assert copy.updated_at == canonical_instant(record["updatedAt"]), key
        expected_deleted = record.get("deletedAt")
        assert copy.deleted_at == (
            canonical_instant(expected_deleted) if expected_deleted else None
        ), key
        assert copy.data == record, key


def test_convergence_while_the_source_changes(
    store_url: str,
    sandbox: SandboxHandle,
    test_redis: Any,
    worker_factory: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    token = _token()
    sandbox.put_connection(
        token, {"seed": 11, "sizes": {"assets": 1500, "work-orders": 700}, "latency_ms": 3}
    )
    env = _env(store_url, sandbox, ENTITY_SYNC_PAGES_PER_TASK="4")
    env.add_connection("mutating", token, ("assets", "work-orders"))
    worker_factory.append(WorkerProcess(env, tmp_path / "worker.log").start())

    stop = threading.Event()
    batches = 0

    def mutate_while_syncing() -> None:
        nonlocal batches
        while not stop.is_set():
            bulk = 150 if batches % 5 == 2 else 0
            sandbox.mutate(token, updates=15, deletes=2, inserts=3, bulk_import=bulk)
            batches += 1
            time.sleep(0.05)

    mutator = threading.Thread(target=mutate_while_syncing)
    mutator.start()
    try:
        first = _sync(env, "mutating")
    finally:
        stop.set()
        mutator.join()
    assert batches > 3, "the source must change during the first run"
    assert [r.status for r in first] == [RunStatus.SUCCEEDED] * 2
    second = _sync(env, "mutating")
    assert [r.status for r in second] == [RunStatus.SUCCEEDED] * 2
    store = env.store()
    for entity in ("assets", "work-orders"):
        assert_store_equals_upstream(store, sandbox, "mutating", token, entity)


@pytest.mark.parametrize("tie_order", ["stable", "shuffled"])
def test_ties_larger_than_a_page_are_all_stored_once(
    tie_order: str,
    sandbox: SandboxHandle,
    test_redis: Any,
    worker_factory: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    token = _token()
    sandbox.put_connection(token, {"seed": 5, "sizes": {"assets": 0}, "tie_order": tie_order})
    sandbox.mutate(token, bulk_import=250, entities=["assets"])
    truth = sandbox.truth(token, "assets")
    assert len(truth) == 250 and len({r["updatedAt"] for r in truth}) == 1
    env = _env(f"sqlite:///{tmp_path}/store.db", sandbox, ENTITY_SYNC_PAGE_SIZE="100")
    env.add_connection("ties", token, ("assets",))
    worker_factory.append(WorkerProcess(env, tmp_path / "worker.log").start())
    [run] = _sync(env, "ties")
    assert run.status == RunStatus.SUCCEEDED
    assert_store_equals_upstream(env.store(), sandbox, "ties", token, "assets")


def test_two_requests_for_one_pair_make_one_run(
    sandbox: SandboxHandle, test_redis: Any, worker_factory: list[WorkerProcess], tmp_path: Path
) -> None:
    token = _token()
    sandbox.put_connection(token, {"seed": 8, "sizes": {"assets": 1500}, "latency_ms": 30})
    env = _env(f"sqlite:///{tmp_path}/store.db", sandbox)
    env.add_connection("twice", token, ("assets",))
    for n in range(2):
        worker_factory.append(WorkerProcess(env, tmp_path / f"worker{n}.log").start())
    client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
    requests = [client.sync_connection("twice") for _ in range(2)]
    store = env.store()
    results = [wait_for_runs(store, r, ["assets"], timeout_s=120) for r in requests]
    assert results[0][0].id == results[1][0].id, "both requests resolve to the same run"
    all_runs = [run for r in requests for run in store.runs_for_request(r)]
    statuses = sorted(run.status for run in all_runs)
    assert statuses == [RunStatus.SKIPPED, RunStatus.SUCCEEDED]
    assert_store_equals_upstream(store, sandbox, "twice", token, "assets")


def test_sigkill_mid_sync_loses_and_duplicates_nothing(
    store_url: str,
    sandbox: SandboxHandle,
    test_redis: Any,
    worker_factory: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    token = _token()
    sandbox.put_connection(token, {"seed": 21, "sizes": {"assets": 3000}, "latency_ms": 25})
    # A kill between handing the lease over and sending the successor loses
    # the continuation; the stalled-run check sends the run again (8 s here).
    env = _env(
        store_url,
        sandbox,
        ENTITY_SYNC_PAGES_PER_TASK="3",
        ENTITY_SYNC_LEASE_TTL="5",
        ENTITY_SYNC_STALLED_RUN_SECONDS="8",
    )
    env.add_connection("crashy", token, ("assets",))
    store = env.store()
    worker = WorkerProcess(env, tmp_path / "w1.log", pool="prefork", concurrency=2).start()
    worker_factory.append(worker)
    client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])

    # 1. Kill a pool child mid-run: its task goes back to the queue and the
    #    same run finishes by itself.
    request = client.sync_connection("crashy")
    wait_for(lambda: _pages(store, request) >= 4, 60, "a few pages", worker)
    for pid in worker.pool_pids():
        import os
        import signal

        os.kill(pid, signal.SIGKILL)
    [run] = wait_for_runs(store, request, ["assets"], timeout_s=120)
    assert run.status == RunStatus.SUCCEEDED

    # 2. Kill the whole worker mid-run, start a new one, sync again.
    sandbox.mutate(token, updates=50, inserts=20, entities=["assets"])
    request = client.sync_connection("crashy", full=True)
    wait_for(lambda: _pages(store, request) >= 3, 60, "a few pages", worker)
    worker.kill()
    fresh = WorkerProcess(env, tmp_path / "w2.log", pool="prefork", concurrency=2).start()
    worker_factory.append(fresh)
    time.sleep(5.5)  # the dead worker's lease runs out
    [run] = _sync(env, "crashy")
    assert run.status == RunStatus.SUCCEEDED
    assert_store_equals_upstream(store, sandbox, "crashy", token, "assets")


def _pages(store: SqlStore, request_id: str) -> int:
    return sum(run.pages for run in store.runs_for_request(request_id))


def test_a_bad_record_is_quarantined_and_the_page_stored(
    sandbox: SandboxHandle, test_redis: Any, worker_factory: list[WorkerProcess], tmp_path: Path
) -> None:
    token = _token()
    sandbox.put_connection(
        token,
        {
            "seed": 3,
            "sizes": {"assets": 250},
            "scenarios": [{"name": "bad_record", "entity": "assets"}],
        },
    )
    env = _env(f"sqlite:///{tmp_path}/store.db", sandbox)
    env.add_connection("badrec", token, ("assets",))
    worker_factory.append(WorkerProcess(env, tmp_path / "worker.log").start())
    [run] = _sync(env, "badrec")
    assert run.status == RunStatus.SUCCEEDED
    store = env.store()
    quarantined = store.quarantined("badrec", "assets")
    assert quarantined and all(reason == "record has no string key" for _, reason in quarantined)
    assert len(store.records("badrec", "assets")) >= 250 - len(quarantined)
    assert run.records > 0


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        ({"entity_type": "assets"}, "connection_id: Field required"),
        ({"connection_id": "x", "entity_type": "assets", "bogus": 1}, "Extra inputs"),
        ({"connection_id": "x", "entity_type": "planets"}, "entity_type"),
        ({"connection_id": ["x"], "entity_type": "assets"}, "connection_id"),
        ({"connection_id": "no-such-connection", "entity_type": "assets"}, "unknown connection"),
        ({"connection_id": "valid", "entity_type": "users"}, "does not sync"),
    ],
)
def test_malformed_payloads_are_rejected_and_the_worker_keeps_working(
    payload: dict[str, Any],
    complaint: str,
    sandbox: SandboxHandle,
    test_redis: Any,
    worker_factory: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    token = _token()
    sandbox.put_connection(token, {"seed": 1, "sizes": {"assets": 30}})
    env = _env(f"sqlite:///{tmp_path}/store.db", sandbox)
    env.add_connection("valid", token, ("assets",))
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    worker_factory.append(worker)
    client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
    request_id = f"bad-{uuid.uuid4().hex[:8]}"
    client.send(SYNC_ENTITY, {**payload, "request_id": request_id})
    store = env.store()
    rejected = wait_for(
        lambda: [r for r in store.recent_runs(status="rejected")], 30, "the rejection", worker
    )
    assert complaint in (rejected[0].error_message or "")
    assert "job rejected" in worker.log()
    [run] = _sync(env, "valid")
    assert run.status == RunStatus.SUCCEEDED and run.records == 30
