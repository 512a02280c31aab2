"""A job waiting for a busy connection's slot is woken by the task that frees one.

Real Redis (slots, the waiting mark), real SQLite and PostgreSQL stores, the
sandbox over HTTP; ``sent`` records what the tasks would enqueue. Without the
wake a waiter sits out its own countdown (``SLOT_WAIT_S``) with the slot idle.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from harness.testing.sandbox import SandboxHandle, running_sandbox
from tests.support import REDIS_URL
from worker.coordination import redis_keys
from worker.jobs import SYNC_ENTITY, SyncEntityJob
from worker.runtime import Runtime
from worker.secrets import generate_key
from worker.settings import Settings
from worker.store import Connection, RunStatus
from worker.sync.runner import TaskOutcome, run_step
from worker.sync.slot_wait import SLOT_WAIT_REASON

pytestmark = pytest.mark.integration

TOKEN = "tok-slot-wait"
Sent = list[tuple[str, dict[str, Any], str | None]]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(preset="empty") as handle:
        handle.put_connection(TOKEN, {"seed": 7, "sizes": {"assets": 30, "sites": 20}})
        yield handle


@pytest.fixture
def world(
    store_url: str, test_redis: redis.Redis, sandbox: SandboxHandle
) -> Iterator[tuple[Runtime, Sent]]:
    sent: Sent = []

    def publish(name: str, payload: dict[str, Any], queue: str | None, **_: Any) -> str:
        sent.append((name, payload, queue))
        return f"task-{len(sent)}"

    settings = Settings(
        redis_url=REDIS_URL,
        store_url=store_url,
        upstream_url=sandbox.url,
        secret_key=generate_key(),
        max_concurrency=1,  # one request in flight per connection
        page_size=10,
    )
    rt = Runtime(settings=settings, publisher=publish)
    rt.store.add_connection(
        Connection(
            id="c1",
            name="Acme",
            entity_types=("assets", "sites"),
            token_ciphertext=rt.secrets.encrypt(TOKEN),
        )
    )
    yield rt, sent
    rt.store.drop_connection()


def test_the_task_that_frees_the_slot_resumes_the_waiting_job_at_once(
    world: tuple[Runtime, Sent], test_redis: redis.Redis
) -> None:
    rt, sent = world
    assert rt.limits.acquire_slot("c1", "somebody-else", ttl_s=30)
    sites = run_step(
        rt, SyncEntityJob(connection_id="c1", entity_type="sites"), task_id="s1", retries=0
    )
    assert sites.outcome == TaskOutcome.DEFERRED, sites
    assert [j.reason for j in rt.store.parked_jobs("c1")] == [SLOT_WAIT_REASON]
    assert test_redis.exists(redis_keys.slot_waiters("c1"))
    rt.limits.release_slot("c1", "somebody-else")

    assets = run_step(
        rt, SyncEntityJob(connection_id="c1", entity_type="assets"), task_id="a1", retries=0
    )

    assert assets.outcome == TaskOutcome.DONE, assets
    # Freeing its slot, the assets task sent the parked sites job on, long
    # before that job's own countdown: its park row is claimed (one run only).
    resumed = [payload for name, payload, _ in sent if name == SYNC_ENTITY]
    assert [(p["entity_type"], p["run_id"]) for p in resumed] == [("sites", sites.run_id)]
    assert (
        rt.store.claim_parked_job(
            "c1",
            "sites",
            run_id=sites.run_id,
            due_at=sites.parked_until or "",
            claim_until="2099-01-01T00:00:00.000000Z",
        )
        is None
    )

    again = run_step(rt, SyncEntityJob.model_validate(resumed[0]), task_id="s2", retries=0)

    assert again.outcome == TaskOutcome.DONE, again
    run = rt.store.get_run(sites.run_id)
    assert run is not None and run.status == RunStatus.SUCCEEDED, run
    stored = {s.entity_type: s.records for s in rt.store.entity_statuses("c1")}
    assert stored == {"assets": 30, "sites": 20}
    # Nobody waits any more: the mark is gone and nothing more was sent.
    assert not test_redis.exists(redis_keys.slot_waiters("c1"))
    assert len([name for name, _, _ in sent if name == SYNC_ENTITY]) == 1


def test_a_slice_end_with_nobody_waiting_sends_nothing(
    world: tuple[Runtime, Sent], test_redis: redis.Redis
) -> None:
    rt, sent = world
    step = run_step(
        rt, SyncEntityJob(connection_id="c1", entity_type="assets"), task_id="a1", retries=0
    )
    assert step.outcome == TaskOutcome.DONE, step
    assert [name for name, _, _ in sent if name == SYNC_ENTITY] == []
    assert not test_redis.exists(redis_keys.slot_waiters("c1"))
