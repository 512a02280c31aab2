"""The housekeeping tick and the single claim of a parked job, on real Redis and stores."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support import Env
from worker.runtime import Runtime
from worker.store import Connection, ParkedJob
from worker.sync.housekeeping import Step, tick
from worker.sync.recovery import resume_parked, resume_parked_job
from worker.timeutil import canonical

pytestmark = pytest.mark.integration


def test_each_step_runs_once_per_period_however_many_ticks(test_redis: Any) -> None:
    calls: dict[str, int] = {"every": 0, "slow": 0, "broken": 0}

    def count(name: str) -> Any:
        def run() -> int:
            calls[name] += 1
            if name == "broken":
                raise RuntimeError("boom")
            return calls[name]

        return run

    steps = [Step("every", 0, count("every")), Step("slow", 2.0, count("slow")),
             Step("broken", 0, count("broken"))]  # fmt: skip
    for _ in range(4):  # two beats' worth of ticks in the same second
        done = tick(test_redis, steps)
    assert calls["every"] == 4 and calls["slow"] == 1
    assert calls["broken"] == 4, "a failing step never stops the others"
    assert str(done["broken"]).startswith("error: boom")
    time.sleep(2.0)
    tick(test_redis, steps)
    assert calls["slow"] == 2


def test_a_parked_job_is_sent_once_by_whoever_claims_it_first(
    store_url: str, test_redis: Any, tmp_path: Path
) -> None:
    env = Env(store_url=store_url, upstream_url="http://127.0.0.1:9")
    rt = Runtime(settings=env.settings())
    rt.store.add_connection(Connection(id="c1", name="c1", entity_types=("assets",)))
    due = canonical(datetime.now(UTC) - timedelta(seconds=1))
    payload = {"connection_id": "c1", "entity_type": "assets", "run_id": "r1", "trigger": "retry"}
    rt.store.park_job(
        ParkedJob(
            connection_id="c1",
            entity_type="assets",
            run_id="r1",
            due_at=due,
            reason="paused",
            payload_json=json.dumps(payload),
        )
    )
    sent: list[dict[str, Any]] = []

    def send(name: str, body: dict[str, Any], queue: str) -> None:
        sent.append(body)

    resume: dict[str, Any] = {
        "store": rt.store,
        "client": rt.redis,
        "connection_id": "c1",
        "entity_type": "assets",
        "run_id": "r1",
        "due_at": due,
    }
    assert resume_parked_job(send, **resume) is True  # the worker's own countdown
    assert resume_parked(rt.store, send) == 0  # beat's tick finds it claimed
    assert resume_parked_job(send, **resume) is False  # a duplicate countdown
    assert sent == [payload]

    # The other order: beat first, then the worker's countdown finds nothing.
    rt.store.park_job(
        ParkedJob(
            connection_id="c1",
            entity_type="assets",
            run_id="r1",
            due_at=due,
            reason="paused",
            payload_json=json.dumps(payload),
        )
    )
    assert resume_parked(rt.store, send) == 1
    assert resume_parked_job(send, **resume) is False
    assert len(sent) == 2
