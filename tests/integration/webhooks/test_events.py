"""Re-authorisation events and their signed delivery: real worker, Redis, sandbox, receiver."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.testing.sandbox import SandboxHandle, running_sandbox
from tests.support import Env, WebhookReceiver, WorkerProcess, wait_for, wait_for_runs
from worker.client import EntitySyncClient
from worker.events import EventReason, EventType, build_event
from worker.jobs import SYNC_ENTITY
from worker.store import RunStatus

pytestmark = pytest.mark.integration

SECRET = "whsec_test_0123456789abcdef"
ALL_TYPES = ("sites", "locations", "assets", "work-orders", "materials", "purchase-orders",
             "vendors", "users")  # fmt: skip


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(preset="empty") as handle:
        yield handle


def _env(tmp_path: Path, sandbox: SandboxHandle, **extra: str) -> Env:
    return Env(
        store_url=f"sqlite:///{tmp_path}/store.db",
        upstream_url=sandbox.url,
        ENTITY_SYNC_WEBHOOK_SECRET=SECRET,
        ENTITY_SYNC_WEBHOOK_ALLOW_HTTP="true",
        ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE="true",
        ENTITY_SYNC_WEBHOOK_RETRY_BASE_SECONDS="0.5",
        ENTITY_SYNC_WEBHOOK_RETRY_CAP_SECONDS="1",
        **extra,
    )


def _token() -> str:
    return f"tok-{uuid.uuid4().hex[:10]}"


def test_twenty_syncs_hitting_one_401_deliver_exactly_one_event(
    sandbox: SandboxHandle, test_redis: Any, worker_factory: list[WorkerProcess], tmp_path: Path
) -> None:
    token = _token()
    sandbox.put_connection(
        token,
        {
            "seed": 4,
            "default_size": 300,
            "latency_ms": 20,
            "scenarios": [{"name": "auth_fail_from_page", "page": 3, "status_401": True}],
        },
    )
    receiver = WebhookReceiver(SECRET).start()
    try:
        env = _env(tmp_path, sandbox)
        env.add_connection("acme", token, ALL_TYPES, webhook_url=receiver.url)
        for n in range(2):
            worker_factory.append(
                WorkerProcess(env, tmp_path / f"w{n}.log", concurrency=10, beat=n == 0).start()
            )
        client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
        for entity in ALL_TYPES * 3:  # 24 jobs: 8 runs at once, the rest coalesce
            client.send(SYNC_ENTITY, {"connection_id": "acme", "entity_type": entity})
        wait_for(
            lambda: receiver.of_type("connection.reauthorization_required"),
            60,
            "the re-authorisation webhook",
            worker_factory[0],
        )
        # Give any duplicate every chance to arrive before counting.
        store = env.store()
        wait_for(lambda: not store.events(status="pending"), 30, "the outbox to drain")
        [event] = receiver.of_type("connection.reauthorization_required")
        assert event["connection_id"] == "acme"
        assert event["reason"]["http_status"] == 401
        assert event["reason"]["code"] == "AUTHENTICATION_FAILED"
        assert "set-token" in event["instruction"]
        assert event["_header_id"] == event["id"]
        assert receiver.bad_signatures == 0
        assert [e.type for e in store.events()] == ["connection.reauthorization_required"]
        halts = [t for t in store.transitions("acme") if t.to_state == "halted"]
        assert len(halts) == 1
    finally:
        receiver.stop()


def test_a_receiver_that_is_down_gets_every_event_once_in_order(
    sandbox: SandboxHandle, test_redis: Any, worker_factory: list[WorkerProcess], tmp_path: Path
) -> None:
    receiver = WebhookReceiver(SECRET)  # not listening yet: connections are refused
    env = _env(tmp_path, sandbox)
    env.add_connection("acme", _token(), ("assets",), webhook_url=receiver.url)
    store = env.store()
    kinds = [EventType.REAUTHORIZATION_REQUIRED, EventType.RECOVERED] * 3
    written = []
    for kind in kinds:
        event = build_event(
            kind, connection_id="acme", entity_type=None, reason=EventReason(message="test")
        )
        assert store.add_event(event)
        written.append(event.id)
    worker = WorkerProcess(env, tmp_path / "w.log").start()
    worker_factory.append(worker)
    wait_for(lambda: any(e.attempts >= 2 for e in store.events()), 30, "failed attempts", worker)
    receiver.start()
    receiver.failing = True  # up, but answering 503 for a while
    wait_for(lambda: receiver.attempts >= 2, 30, "attempts against a failing receiver", worker)
    receiver.failing = False
    try:
        wait_for(lambda: len(receiver.received) >= len(written), 60, "every event", worker)
        assert [e["id"] for e in receiver.received] == written
        assert all(e.status == "delivered" for e in store.events())
        assert receiver.bad_signatures == 0
    finally:
        receiver.stop()


def test_events_survive_a_redis_flush_before_delivery(
    sandbox: SandboxHandle, test_redis: Any, worker_factory: list[WorkerProcess], tmp_path: Path
) -> None:
    receiver = WebhookReceiver(SECRET).start()
    try:
        env = _env(tmp_path, sandbox)
        env.add_connection("acme", _token(), ("assets",), webhook_url=receiver.url)
        event = build_event(
            EventType.REAUTHORIZATION_REQUIRED,
            connection_id="acme",
            entity_type=None,
            reason=EventReason(kind="auth", http_status=401),
        )
        assert env.store().add_event(event)
        test_redis.flushdb()  # the broker and every breaker with it
        worker_factory.append(WorkerProcess(env, tmp_path / "w.log").start())
        wait_for(lambda: receiver.received, 30, "the event after the flush", worker_factory[0])
        assert [e["id"] for e in receiver.received] == [event.id]
    finally:
        receiver.stop()


def test_set_token_after_a_halt_recovers_and_loses_nothing(
    sandbox: SandboxHandle, test_redis: Any, worker_factory: list[WorkerProcess], tmp_path: Path
) -> None:
    token, new_token = _token(), _token()
    sandbox.put_connection(
        token,
        {
            "seed": 9,
            "sizes": {"assets": 900, "sites": 40},
            "latency_ms": 5,
            "scenarios": [{"name": "auth_fail_from_page", "page": 4}],
        },
    )
    receiver = WebhookReceiver(SECRET).start()
    try:
        env = _env(tmp_path, sandbox)
        env.add_connection("acme", token, ("assets", "sites"), webhook_url=receiver.url)
        worker = WorkerProcess(env, tmp_path / "w.log").start()
        worker_factory.append(worker)
        client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
        store = env.store()
        runs = wait_for_runs(
            store, client.sync_connection("acme"), ["assets", "sites"], timeout_s=60
        )
        assert RunStatus.FAILED in [r.status for r in runs]
        wait_for(
            lambda: receiver.of_type("connection.reauthorization_required"),
            30,
            "the re-authorisation webhook",
            worker,
        )

        sandbox.rotate(token, new_token)  # the customer reconnects
        result = env.cli("connections", "set-token", "acme", stdin=new_token + "\n")
        assert result.returncode == 0, result.stderr
        assert "resumed" in result.stdout
        wait_for(lambda: receiver.of_type("connection.recovered"), 30, "recovered", worker)
        request_id = result.stdout.split("(request ")[1].rstrip(")\n")
        runs = wait_for_runs(store, request_id, ["assets", "sites"], timeout_s=60)
        assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * 2
        for entity in ("assets", "sites"):
            truth = {r["key"]: r for r in sandbox.truth(new_token, entity)}
            stored = {r.key: r.data for r in store.records("acme", entity)}
            assert stored == truth
        types = [e["type"] for e in receiver.received]
        assert types == ["connection.reauthorization_required", "connection.recovered"]
        assert json.loads(store.events()[-1].body_json)["type"] == "connection.recovered"
    finally:
        receiver.stop()
