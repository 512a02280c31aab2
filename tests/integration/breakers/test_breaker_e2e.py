"""Breakers and pauses across several real worker processes, counted at the sandbox.

Two promises, each measured where it matters, at the upstream:

- an offline connection hammered by several workers receives at most the
  trip threshold (plus what was already in flight) and then ONE probe per
  open interval;
- no request is sent inside a Retry-After window the worker was told about,
  whichever worker process or entity type received the 429.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from harness.testing.sandbox import SandboxHandle, running_sandbox
from tests.integration.hostile.test_scenarios import (
    RETRY_AFTER_S,
    assert_only_requests_in_flight_landed_inside,
    own_redis_db,
    request_log,
)
from tests.support import Env, WorkerProcess, wait_for, wait_for_runs
from worker.client import EntitySyncClient
from worker.entities import ALL_ENTITY_TYPES
from worker.resilience.connection_limits import apply_limits
from worker.runtime import Runtime
from worker.secrets import SecretBox
from worker.store import Connection, RunStatus, TransitionRecord
from worker.timeutil import parse_instant

pytestmark = pytest.mark.integration

THRESHOLD = 3
MAX_CONCURRENCY = 4  # the default per-connection cap on tasks at once
TYPES = tuple(t.value for t in ALL_ENTITY_TYPES)  # all eight


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(preset="empty") as handle:
        yield handle


@pytest.fixture
def own_redis() -> Iterator[str]:
    """An empty Redis database of this test's own (broker included)."""
    with own_redis_db() as url:
        yield url


def _env(tmp_path: Path, sandbox: SandboxHandle, own_redis: str) -> Env:
    return Env(
        store_url=f"sqlite:///{tmp_path}/store.db",
        upstream_url=sandbox.url,
        ENTITY_SYNC_REDIS_URL=own_redis,
        ENTITY_SYNC_PAGE_SIZE="25",
        ENTITY_SYNC_REQUEST_DEADLINE="3",
        ENTITY_SYNC_READ_TIMEOUT="2",
        ENTITY_SYNC_BREAKER_BASE_OPEN_SECONDS="1",
        ENTITY_SYNC_BREAKER_MAX_OPEN_SECONDS="3",
        ENTITY_SYNC_BREAKER_CONSECUTIVE_FAILURES=str(THRESHOLD),
        ENTITY_SYNC_MAX_RETRIES="3",
        ENTITY_SYNC_RETRY_BACKOFF_CAP_SECONDS="1",
    )


def _register(
    env: Env, connection_id: str, token: str, *, max_concurrency: int | None = None
) -> None:
    box = SecretBox(env.vars["ENTITY_SYNC_SECRET_KEY"])
    env.store().add_connection(
        Connection(
            id=connection_id,
            name=connection_id,
            entity_types=TYPES,
            token_ciphertext=box.encrypt(token),
            max_concurrency=max_concurrency,
        )
    )


def _workers(env: Env, tmp_path: Path, started: list[WorkerProcess], n: int) -> None:
    for i in range(n):
        # One beat for the lot, as in production (beat resumes parked jobs).
        worker = WorkerProcess(env, tmp_path / f"w{i}.log", concurrency=4, beat=i == 0)
        started.append(worker.start())


def _wall(request: dict[str, Any]) -> datetime:
    return parse_instant(request["wall"])


def _opened(transitions: list[TransitionRecord]) -> list[datetime]:
    """When the connection level (not an entity type) went to open, in order."""
    return [
        parse_instant(t.at) for t in transitions if t.entity_type is None and t.to_state == "open"
    ]


def test_an_offline_connection_gets_one_probe_per_open_interval(
    sandbox: SandboxHandle,
    own_redis: str,
    worker_factory: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    token = f"tok-{uuid.uuid4().hex[:10]}"
    env = _env(tmp_path, sandbox, own_redis)
    _register(env, "dark", token)
    _workers(env, tmp_path, worker_factory, 3)
    # Offline from the first request on, for the whole test: status and lists.
    sandbox.put_connection(
        token, {"seed": 4, "default_size": 100, "scenarios": [{"name": "offline"}]}
    )
    client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
    for _ in range(3):  # several requests, as impatient callers would send
        client.sync_connection("dark")
    store = env.store()
    # Let the three workers beat on it for a while: many open intervals.
    wait_for(lambda: len(_opened(store.transitions("dark"))) >= 6, 60, "reopenings")
    time.sleep(4)
    requests = sandbox.token_stats(token)["requests"]
    transitions = store.transitions("dark", limit=1000)
    opens = _opened(transitions)
    log = (
        request_log(requests)
        + "\n"
        + "\n".join(
            f"{t.at} {t.entity_type or 'conn'} {t.from_state}->{t.to_state} {t.reason[:60]}"
            for t in transitions
        )
    )

    assert requests and all(r["status"] == 503 for r in requests), log
    first = next(t for t in transitions if t.entity_type is None)
    assert (first.from_state, first.to_state) == ("closed", "open"), log
    assert all(t.to_state != "closed" for t in transitions if t.entity_type is None), log
    # Closed: the threshold trips it; requests already on the wire (one per
    # other concurrency slot of the connection) still arrive.
    before_first = [r for r in requests if _wall(r) <= opens[0]]
    assert THRESHOLD <= len(before_first) <= THRESHOLD + MAX_CONCURRENCY - 1, log
    stragglers_and_probe = [r for r in requests if opens[0] < _wall(r) <= opens[1]]
    assert len(before_first) + len(stragglers_and_probe) <= THRESHOLD + MAX_CONCURRENCY, log
    # Every later open interval: exactly the one probe that failed and reopened it.
    for start, end in zip(opens[1:], opens[2:], strict=False):
        inside = [r for r in requests if start < _wall(r) <= end]
        assert len(inside) == 1, f"{len(inside)} requests in ({start}, {end}]\n{log}"
    after_last = [r for r in requests if _wall(r) > opens[-1]]
    assert len(after_last) <= 1, log
    # The workers really were hammering: far more task runs than requests.
    runs = [r for r in store.recent_runs(limit=100) if r.connection_id == "dark"]
    assert {r.entity_type for r in runs} == set(TYPES)
    assert sum(r.tasks for r in runs) > len(requests), (sum(r.tasks for r in runs), log)
    assert all(r.status in (RunStatus.DEFERRED, RunStatus.RUNNING, RunStatus.SKIPPED) for r in runs)


@pytest.mark.parametrize(
    ("as_date", "max_concurrency"),
    [(False, 1), (True, 1), (False, None)],
    ids=["seconds-one-at-a-time", "date-one-at-a-time", "seconds-four-at-a-time"],
)
def test_no_request_inside_a_retry_after_window_across_workers(
    as_date: bool,
    max_concurrency: int | None,
    sandbox: SandboxHandle,
    own_redis: str,
    worker_factory: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    token = f"tok-{uuid.uuid4().hex[:10]}"
    types = TYPES[:5]
    env = _env(tmp_path, sandbox, own_redis)
    box = SecretBox(env.vars["ENTITY_SYNC_SECRET_KEY"])
    env.store().add_connection(
        Connection(
            id="limited",
            name="limited",
            entity_types=types,
            token_ciphertext=box.encrypt(token),
            max_concurrency=max_concurrency,
        )
    )
    # The store's copy reaches Redis on the next probe; the test cannot wait for it.
    apply_limits(Runtime(settings=env.settings()).limits, env.store().list_connections())
    _workers(env, tmp_path, worker_factory, 2)
    scenario = {
        "name": "rate_limit",
        "every": 4,
        "retry_after_s": RETRY_AFTER_S,
        "as_date": as_date,
    }
    sandbox.put_connection(token, {"seed": 9, "default_size": 60, "scenarios": [scenario]})
    client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
    request_id = client.sync_connection("limited")
    runs = wait_for_runs(env.store(), request_id, types, timeout_s=150)
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * len(types)
    stats = sandbox.token_stats(token)
    requests = stats["requests"]
    log = request_log(requests)
    announced = [r for r in requests if r["status"] == 429 and not r["inside_retry_after"]]
    assert len(announced) >= 3, log
    if max_concurrency == 1:
        # One request on the wire at a time: none may land inside a window.
        assert stats["inside_retry_after"] == 0, log
    else:
        # Several on the wire: only those already sent when a 429 was
        # answered may land inside its window.
        assert_only_requests_in_flight_landed_inside(requests, len(types))
    for run in runs:
        truth = {r["key"] for r in sandbox.truth(token, run.entity_type or "")}
        stored = {r.key for r in env.store().records("limited", run.entity_type or "")}
        assert stored == truth
