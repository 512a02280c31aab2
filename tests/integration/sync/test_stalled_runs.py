"""Runs whose next task the broker lost are sent again from their saved cursor.

Real Redis (leases) and real SQLite and PostgreSQL stores; ``send`` records
what housekeeping would enqueue. The end-to-end case (a Redis restarted
empty under a real worker) is in test_faults.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from tests.support import REDIS_URL
from worker.coordination.lease import holder_of
from worker.jobs import BACKFILL_QUEUE, SYNC_ENTITY, SYNC_QUEUE, SyncEntityJob
from worker.runtime import Runtime
from worker.settings import Settings
from worker.store import Connection, PageCommit, Run, RunStatus
from worker.sync.poison import dead_letter
from worker.sync.recovery import MAX_RECOVERIES, resend_stalled_runs
from worker.sync.runner import TaskOutcome, run_step
from worker.timeutil import canonical, utc_now

pytestmark = pytest.mark.integration

Sent = list[tuple[str, dict[str, Any], str]]


@pytest.fixture
def rt(store_url: str, test_redis: redis.Redis) -> Iterator[Runtime]:
    settings = Settings(
        redis_url=REDIS_URL, store_url=store_url, lease_ttl=5, stalled_run_seconds=60
    )
    runtime = Runtime(settings=settings)
    runtime.store.add_connection(Connection(id="c1", name="Acme", entity_types=("assets", "sites")))
    yield runtime
    runtime.store.drop_connection()


def _ago(seconds: float) -> str:
    return canonical(datetime.now(UTC) - timedelta(seconds=seconds))


def _run(run_id: str, *, started: str, full: bool = False, **fields: Any) -> Run:
    defaults: dict[str, Any] = {
        "connection_id": "c1",
        "entity_type": "assets",
        "status": RunStatus.RUNNING,
        "request_id": "req-1",
        "trigger": "manual",
    }
    return Run(id=run_id, started_at=started, full=full, **(defaults | fields))


def _running(rt: Runtime, run_id: str, *, started: str, full: bool = False) -> None:
    rt.store.start_run(_run(run_id, started=started, full=full))


def _resend(rt: Runtime, backlog: dict[str, int] | None = None) -> Sent:
    sent: Sent = []
    resend_stalled_runs(
        lambda name, payload, queue: sent.append((name, payload, queue)),
        lambda queue: (backlog or {}).get(queue, 0),
        store=rt.store,
        leases=rt.leases,
        stalled_run_seconds=rt.settings.stalled_run_seconds,
    )
    return sent


def test_a_run_quiet_for_longer_than_the_limit_is_sent_again_once(rt: Runtime) -> None:
    _running(rt, "run-old", started=_ago(3600))
    sent = _resend(rt)
    assert len(sent) == 1
    name, payload, queue = sent[0]
    job = SyncEntityJob.model_validate(payload)
    assert (name, queue) == (SYNC_ENTITY, SYNC_QUEUE)
    assert (job.run_id, job.connection_id, job.entity_type.value) == ("run-old", "c1", "assets")
    assert (job.trigger, job.request_id, job.resume_from) == ("recovery", "req-1", None)
    # Sending it counts as a sign of life: the next pass leaves it alone.
    assert _resend(rt) == []
    run = rt.store.get_run("run-old")
    assert run is not None and run.recoveries == 1 and run.status == RunStatus.RUNNING


def test_a_full_run_goes_back_to_the_backfill_queue(rt: Runtime) -> None:
    _running(rt, "run-full", started=_ago(3600), full=True)
    [(_, payload, queue)] = _resend(rt)
    assert queue == BACKFILL_QUEUE and payload["full"] is True


def test_a_run_with_a_recent_page_or_a_held_lease_is_left_alone(rt: Runtime) -> None:
    _running(rt, "run-busy", started=_ago(3600))
    rt.store.touch_run("run-busy", "c1", "assets")  # a task started just now
    assert _resend(rt) == []

    _running(rt, "run-leased", started=_ago(3600))
    rt.store.start_run(
        Run(
            id="run-sites",
            connection_id="c1",
            entity_type="sites",
            status=RunStatus.RUNNING,
            started_at=_ago(3600),
        )
    )
    rt.leases.acquire("c1", "sites", holder_of("run-sites", "task-waiting-in-the-queue"))
    sent = _resend(rt)
    assert [payload["run_id"] for _, payload, _ in sent] == ["run-leased"]


def test_a_queued_run_is_sent_again_only_when_its_queue_is_empty(rt: Runtime) -> None:
    queued = _run(
        "run-queued",
        started=_ago(3600),
        status=RunStatus.QUEUED,
        heartbeat_at=_ago(3600),
        queue="sync_manual",
    )
    rt.store.queue_runs([queued])
    # Other messages wait in its queue: its own may simply not have had its turn.
    assert _resend(rt, backlog={"sync_manual": 40}) == []
    [(_, payload, queue)] = _resend(rt, backlog={"sync": 40})
    assert (payload["run_id"], queue) == ("run-queued", "sync_manual")


def test_a_run_whose_task_keeps_vanishing_is_failed_as_lost(rt: Runtime) -> None:
    _running(rt, "run-lost", started=_ago(3600))
    for attempt in range(MAX_RECOVERIES):
        assert len(_resend(rt)) == 1, attempt
        _make_quiet(rt, "run-lost")
    assert _resend(rt) == []
    run = rt.store.get_run("run-lost")
    assert run is not None and run.status == RunStatus.FAILED and run.error_kind == "lost"
    assert f"lost {MAX_RECOVERIES} times" in (run.error_message or "")


def test_a_run_that_makes_progress_between_losses_is_not_given_up(rt: Runtime) -> None:
    _running(rt, "run-long", started=_ago(3600))
    for _ in range(MAX_RECOVERIES):
        assert len(_resend(rt)) == 1
        _make_quiet(rt, "run-long")
    # The re-sent task commits a page before its successor is lost again.
    rt.store.commit_page(PageCommit("c1", "assets", "run-long", (), (), "2026-01-01T00:00:00Z"))
    _make_quiet(rt, "run-long")
    assert len(_resend(rt)) == 1
    run = rt.store.get_run("run-long")
    assert run is not None and (run.status, run.recoveries) == (RunStatus.RUNNING, 1)


def test_a_copy_of_a_task_arriving_after_its_run_ended_stands_down(rt: Runtime) -> None:
    _running(rt, "run-done", started=utc_now())
    rt.store.finish_run("run-done", RunStatus.SUCCEEDED)
    job = SyncEntityJob(connection_id="c1", entity_type="assets", run_id="run-done")
    step = run_step(rt, job, task_id="late-copy", retries=0)
    assert step.outcome is TaskOutcome.SKIPPED and step.detail == "run already succeeded"
    assert rt.leases.holder("c1", "assets") is None  # the pair is free for the next run
    run = rt.store.get_run("run-done")
    assert run is not None and run.tasks == 0  # nothing ran


def test_a_stale_copy_of_a_run_still_going_leaves_the_run_alone(rt: Runtime) -> None:
    # A queued run whose first task holds the pair but has not started the
    # run yet, and a copy of its task sent again by the stalled-run check.
    rt.store.queue_runs([_run("run-q", started=utc_now(), status=RunStatus.QUEUED)])
    rt.leases.acquire("c1", "assets", holder_of("run-q", "first-task"))
    job = SyncEntityJob(connection_id="c1", entity_type="assets", run_id="run-q")
    step = run_step(rt, job, task_id="sent-again", retries=0)
    assert step.outcome is TaskOutcome.SKIPPED
    assert step.detail == "a later task of this run holds the pair"
    run = rt.store.get_run("run-q")
    assert run is not None and run.status == RunStatus.QUEUED  # not skipped into itself
    assert [r.id for r in rt.store.runs_for_request("req-1")] == ["run-q"]  # no extra row
    assert rt.leases.holder("c1", "assets") == holder_of("run-q", "first-task")


def test_a_poison_copy_of_a_run_sent_again_does_not_fail_the_run(rt: Runtime) -> None:
    _running(rt, "run-resent", started=_ago(3600))
    payload = {"connection_id": "c1", "entity_type": "assets", "run_id": "run-resent"}
    # The stalled-run check sent the run again; that task holds the pair now.
    rt.leases.acquire("c1", "assets", holder_of("run-resent", "task-sent-again"))
    dead_letter(rt, "entity_sync.sync_entity", payload, 6, task_id="old-copy")
    run = rt.store.get_run("run-resent")
    assert run is not None and run.status == RunStatus.RUNNING

    # With no other task of the run alive, the poison job ends its run.
    rt.leases.release("c1", "assets", holder_of("run-resent", "task-sent-again"))
    dead_letter(rt, "entity_sync.sync_entity", payload, 6, task_id="old-copy")
    run = rt.store.get_run("run-resent")
    assert run is not None and (run.status, run.error_kind) == (RunStatus.FAILED, "poison")


def _make_quiet(rt: Runtime, run_id: str) -> None:
    """Age the run's heartbeat past the limit, as if its sent task vanished too."""
    with rt.store._write() as tx:  # test-only shortcut: no public way to turn back time
        tx.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (_ago(3600), run_id))
