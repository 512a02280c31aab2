"""A sync_entity task's start: the delivery count rides in its one round trip.

The start counts this delivery of the message, takes the pair's lease and a
concurrency slot and reads the preflight cache in one pipeline. A delivery
past ``MAX_DELIVERIES`` (a poison job) is dead-lettered there, as it was when
the count had a round trip of its own: its run ends ``failed`` with kind
``poison``, and no lease or slot stays held. Real Redis, both stores.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.support import REDIS_URL
from worker.coordination import redis_keys
from worker.coordination.lease import holder_of
from worker.jobs import SyncEntityJob
from worker.runtime import Runtime
from worker.settings import Settings
from worker.store import Connection, Run, RunStatus
from worker.sync.round_trips import begin_task
from worker.sync.runner import TaskOutcome, run_step
from worker.timeutil import utc_now

pytestmark = pytest.mark.integration

MAX_DELIVERIES = 3


@pytest.fixture
def rt(store_url: str, test_redis: redis.Redis) -> Iterator[Runtime]:
    settings = Settings(
        redis_url=REDIS_URL, store_url=store_url, lease_ttl=30, max_deliveries=MAX_DELIVERIES
    )
    runtime = Runtime(settings=settings)
    runtime.store.add_connection(Connection(id="c1", name="Acme", entity_types=("assets",)))
    yield runtime
    runtime.store.drop_connection()


def _writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per write to Redis: a round trip (a pipeline is written at once)."""
    writes: list[int] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self: redis.connection.AbstractConnection, *args: object, **kw: object) -> None:
        writes.append(1)
        send(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    return writes


def _assets_run(run_id: str, status: RunStatus) -> Run:
    now = utc_now()
    return Run(
        id=run_id,
        connection_id="c1",
        entity_type="assets",
        status=status,
        started_at=now,
        heartbeat_at=now,
        request_id="req-1",
        trigger="manual",
    )


def _running_run(rt: Runtime, run_id: str) -> None:
    """A run whose earlier tasks already started (its status ``running``)."""
    rt.store.start_run(_assets_run(run_id, RunStatus.RUNNING))


def _queued_run(rt: Runtime, run_id: str) -> None:
    """The queued run a fan-out writes before sending its first task (id = run id)."""
    rt.store.queue_runs([_assets_run(run_id, RunStatus.QUEUED)])


def _delivered_before(rt: Runtime, task_id: str, times: int) -> None:
    """Earlier deliveries of the message, as if each had crashed its worker."""
    for _ in range(times):
        rt.deliveries.count(task_id, 0)


def test_the_start_counts_the_delivery_in_its_one_round_trip(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = holder_of("run-1", "task-1")
    rt.redis.ping()  # the pool's connection is open: its handshake is not the start's
    writes = _writes(monkeypatch)
    start = begin_task(rt, "c1", "assets", me, first_task=True, delivery=("task-1", 0))
    monkeypatch.undo()

    # Count, lease, slot and cache read: one write, where the count used to be a second.
    assert len(writes) == 1
    assert (start.deliveries, start.holder, start.slot) == (1, me, True)
    assert start.preflight_cached is False
    key = redis_keys.deliveries("task-1", 0)
    assert 0 < rt.redis.ttl(key) <= 86_400  # the counter expires

    again = begin_task(rt, "c1", "assets", me, first_task=False, delivery=("task-1", 0))
    assert again.deliveries == 2  # the same message handed out again
    retried = begin_task(rt, "c1", "assets", me, first_task=False, delivery=("task-1", 1))
    assert retried.deliveries == 1  # a retry is a new message


def test_a_delivery_within_the_limit_runs(rt: Runtime) -> None:
    _queued_run(rt, "task-ok")
    _delivered_before(rt, "task-ok", MAX_DELIVERIES - 1)  # this one is the last allowed
    job = SyncEntityJob(connection_id="c1", entity_type="assets")
    step = run_step(rt, job, task_id="task-ok", retries=0)
    # No token: the run fails for that reason, not as a poison job.
    assert step.outcome is TaskOutcome.FAILED
    run = rt.store.get_run("task-ok")
    assert run is not None and run.error_kind != "poison"


def test_a_poison_first_task_is_dead_lettered_and_holds_nothing(rt: Runtime) -> None:
    _queued_run(rt, "task-p")
    _delivered_before(rt, "task-p", MAX_DELIVERIES)
    job = SyncEntityJob(connection_id="c1", entity_type="assets")
    step = run_step(rt, job, task_id="task-p", retries=0)

    assert step.outcome is TaskOutcome.DEAD_LETTERED
    assert step.summary()["outcome"] == "dead-lettered"  # what the task returned before
    run = rt.store.get_run("task-p")
    assert run is not None and (run.status, run.error_kind) == (RunStatus.FAILED, "poison")
    assert run.error_message is not None and "delivered 4 times" in run.error_message
    assert rt.leases.holder("c1", "assets") is None  # the pair is free for the next run
    assert rt.limits.slot_holders("c1") == []


def test_a_poison_continuation_gives_back_the_lease_it_still_held(rt: Runtime) -> None:
    # The run's earlier deliveries of this task took the lease and died with it.
    _running_run(rt, "run-c")
    me = holder_of("run-c", "task-c")
    rt.leases.acquire("c1", "assets", me)
    rt.limits.acquire_slot("c1", me, ttl_s=30)
    _delivered_before(rt, "task-c", MAX_DELIVERIES)
    job = SyncEntityJob(
        connection_id="c1", entity_type="assets", run_id="run-c", trigger="continuation"
    )
    step = run_step(rt, job, task_id="task-c", retries=0)

    assert step.outcome is TaskOutcome.DEAD_LETTERED
    run = rt.store.get_run("run-c")
    assert run is not None and (run.status, run.error_kind) == (RunStatus.FAILED, "poison")
    assert rt.leases.holder("c1", "assets") is None
    assert rt.limits.slot_holders("c1") == []


def test_a_poison_copy_leaves_the_run_to_the_task_that_holds_it(rt: Runtime) -> None:
    _running_run(rt, "run-r")
    # The stalled-run check sent the run again; that task holds the pair now.
    other = holder_of("run-r", "task-sent-again")
    rt.leases.acquire("c1", "assets", other)
    _delivered_before(rt, "old-copy", MAX_DELIVERIES)
    job = SyncEntityJob(connection_id="c1", entity_type="assets", run_id="run-r")
    step = run_step(rt, job, task_id="old-copy", retries=0)

    assert step.outcome is TaskOutcome.DEAD_LETTERED
    run = rt.store.get_run("run-r")
    assert run is not None and run.status == RunStatus.RUNNING  # it goes on elsewhere
    assert rt.leases.holder("c1", "assets") == other  # not ours to free
    assert rt.limits.slot_holders("c1") == []  # the slot the start took is given back
