"""Every task retries outages of our own infrastructure by one policy (task_base.outage_retry)."""

from __future__ import annotations

import pytest

from worker.celeryapp.task_base import outage_retry
from worker.errors import CoordinationError, StoreError
from worker.jobs import NOTIFY, RESUME_PARKED_JOB, SYNC_CONNECTION, SYNC_ENTITY, UPSTREAM_EVENT


def test_the_policy_retries_store_and_redis_outages_with_capped_backoff() -> None:
    policy = outage_retry()
    assert policy["autoretry_for"] == (StoreError, CoordinationError)
    assert policy["retry_backoff_max"] == 60
    assert policy["max_retries"] == 20
    assert outage_retry(max_retries=3)["max_retries"] == 3  # a task may add to it


@pytest.mark.parametrize(
    "name", [SYNC_CONNECTION, SYNC_ENTITY, NOTIFY, UPSTREAM_EVENT, RESUME_PARKED_JOB]
)
def test_the_tasks_use_it(name: str) -> None:
    import tasks.inbound
    import tasks.notify
    import tasks.schedule
    import tasks.sync  # noqa: F401 - registers the tasks
    from worker.celeryapp.app import app

    task = app.tasks[name]
    assert tuple(task.autoretry_for) == (StoreError, CoordinationError)
    assert task.max_retries == 20
