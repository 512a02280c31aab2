"""The receiver of the unified API's webhooks, and what acting on an event does.

Real HTTP to the receiver, real Redis, SQLite and PostgreSQL; the events are
processed by ``worker.inbound.actions.process_event`` in this process (the task body),
with what it sends collected instead of published. The end-to-end path with a
real worker and the sandbox sending is in test_upstream_webhooks.py.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support import Env, wait_for
from worker.inbound.actions import process_event
from worker.inbound.mapping import learn_upstream_id
from worker.inbound.receiver import PATH, ReceiverServer
from worker.ops.dashboard.data import build_grid
from worker.ops.status import render_upstream, status_rows
from worker.resilience.breaker import State
from worker.runtime import Runtime
from worker.store import SqlStore

pytestmark = pytest.mark.integration

SECRET = "upstream-secret-0123456789"
OLD_SECRET = "upstream-secret-previous-000"
UPSTREAM_ID = "09000000000042"
UPSTREAM_URL = "http://127.0.0.1:9"  # never called: the ids are learned by hand


class Harness:
    """A receiver on a free port over one store, and a Runtime to process with."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.store: SqlStore = env.store()
        self.rt = Runtime(settings=env.settings())
        self.published: list[str] = []
        self.sent: list[tuple[str, dict[str, Any], str]] = []
        self.server = ReceiverServer(
            "127.0.0.1",
            0,
            store=self.store,
            secrets=self.rt.settings.upstream_webhook_secrets(),
            publish=self.published.append,
            max_bytes=self.rt.settings.upstream_webhook_max_bytes,
        ).start()

    def post(
        self, body: bytes, *, secret: str | None = SECRET, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        host, port = self.server.server_address[:2]
        conn = http.client.HTTPConnection(str(host), port, timeout=10)
        sent = {"Content-Type": "application/json"}
        if secret is not None:
            sent["X-Webhook-Signature"] = signature(secret, body)
        conn.request("POST", PATH, body=body, headers=sent | (headers or {}))
        answer = conn.getresponse()
        payload = json.loads(answer.read() or b"{}")
        conn.close()
        return answer.status, payload

    def send(self, event: dict[str, Any]) -> int:
        status, _ = self.post(json.dumps(event).encode())
        return status

    def process(self, event_id: str) -> str:
        def send(name: str, payload: dict[str, Any], queue: str) -> None:
            self.sent.append((name, payload, queue))

        return process_event(self.rt, event_id, send)

    def close(self) -> None:
        self.server.close()


def signature(secret: str, body: bytes) -> str:
    """Written from docs/upstream-api.md, independently of worker.inbound.actions."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def at(offset_s: float = 0.0) -> str:
    """An event time ``offset_s`` after a moment ten minutes ago.

    Relative to now, because processing compares ``created_at`` with the clock
    (an event kept too long goes stale): a fixed date would expire.
    """
    moment = datetime.now(UTC) - timedelta(minutes=10) + timedelta(seconds=offset_s)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(event_type: str, data: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:12]}",
        "type": event_type,
        "created_at": at(),
        "connection_id": UPSTREAM_ID,
        "data": data,
    } | fields


@pytest.fixture
def harness(store_url: str, test_redis: Any, tmp_path: Path) -> Iterator[Harness]:
    env = Env(
        store_url=store_url,
        upstream_url="http://127.0.0.1:9",
        ENTITY_SYNC_UPSTREAM_WEBHOOK_SECRET=f"{SECRET},{OLD_SECRET}",
        ENTITY_SYNC_UPSTREAM_WEBHOOK_MAX_BYTES="4096",
    )
    h = Harness(env)
    env.add_connection("acme", "tok-acme", ("assets", "work-orders"))
    yield h
    h.close()


def test_forged_oversized_and_malformed_bodies_are_refused_and_nothing_is_kept(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="entity_sync.receiver")
    good = json.dumps(event("sync.completed", {"entity_types": ["assets"]})).encode()
    assert harness.post(good, secret=None)[0] == 401
    assert harness.post(good, secret="not-the-secret-at-all")[0] == 401
    assert harness.post(good, headers={"X-Webhook-Signature": "sha256=zz"})[0] == 401
    assert (
        harness.post(good, headers={"X-Webhook-Signature": signature(SECRET, b"other")})[0] == 401
    )
    md5 = "md5=" + hashlib.md5(good).hexdigest()  # noqa: S324 - a wrong scheme on purpose
    assert harness.post(good, headers={"X-Webhook-Signature": md5})[0] == 401
    assert harness.post(b"not json", secret=SECRET)[0] == 400
    assert harness.post(b'{"id": "x"}', secret=SECRET)[0] == 422
    bad_time = json.dumps(event("sync.completed", {}, created_at="yesterday")).encode()
    assert harness.post(bad_time)[0] == 422
    assert harness.post(b"[1, 2]")[0] == 422
    big = json.dumps(event("sync.failed", {"message": "x" * 5000})).encode()
    assert harness.post(big)[0] == 413
    assert _raw(harness, b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n") == 411
    # Claims a small body, sends less, and closes: the read comes up short.
    short = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
        f"X-Webhook-Signature: {signature(SECRET, good)}\r\n\r\n"
    ).encode() + good[:20]
    assert _raw(harness, short, shut=True) == 400
    # A claimed 10 MB body is refused before a byte of it is read.
    huge = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n".encode()
    assert _raw(harness, huge) == 413
    assert harness.store.upstream_events() == []
    assert harness.published == []
    refusals = [r for r in caplog.records if "refused a webhook" in r.getMessage()]
    assert len(refusals) >= 12
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in logged and OLD_SECRET not in logged
    # The previous secret of a rotation verifies too.
    assert harness.post(good, secret=OLD_SECRET)[0] == 202
    assert [e.id for e in harness.store.upstream_events()] == [json.loads(good)["id"]]


def _raw(harness: Harness, request: bytes, *, shut: bool = False) -> int:
    host, port = harness.server.server_address[:2]
    with socket.create_connection((str(host), port), timeout=15) as sock:
        sock.sendall(request)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(4096).decode()
    return int(answer.split()[1])


def test_health(harness: Harness) -> None:
    host, port = harness.server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=10)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()


def test_a_duplicate_is_kept_once_and_acted_on_once(harness: Harness) -> None:
    learn_upstream_id(harness.rt.store, "acme", UPSTREAM_ID, base_url=UPSTREAM_URL)
    hook = event("sync.completed", {"entity_types": ["assets"], "sync_status": "done"})
    assert harness.send(hook) == 202
    assert harness.send(hook) == 200  # a redelivery: same id
    assert harness.published == [hook["id"]]
    assert len(harness.store.upstream_events()) == 1
    assert harness.process(hook["id"]) == "applied"
    assert harness.process(hook["id"]) == "applied"  # already done: nothing again
    assert harness.sent == [
        (
            "entity_sync.sync_connection",
            {
                "connection_id": "acme",
                "entity_types": ["assets"],
                "trigger": "upstream",
                "request_id": f"upstream-{hook['id']}",
            },
            "sync",
        )
    ]


def test_an_older_event_after_a_newer_one_is_ignored(harness: Harness) -> None:
    learn_upstream_id(harness.rt.store, "acme", UPSTREAM_ID, base_url=UPSTREAM_URL)
    online = event("connection.status_changed", {"status": "online"}, created_at=at(60))
    offline = event("connection.status_changed", {"status": "offline"}, created_at=at())
    assert harness.send(online) == 202
    assert harness.send(offline) == 202
    assert harness.process(online["id"]) == "applied"
    assert harness.process(offline["id"]) == "ignored"
    assert harness.rt.breaker.show("acme").connection.state is State.CLOSED
    kept = harness.store.get_upstream_event(offline["id"])
    assert kept is not None and "older than the last availability event" in (kept.outcome or "")
    # Another aspect is ordered on its own: an older sync event still applies.
    sync = event("sync.completed", {"entity_types": ["assets"]}, created_at=at(-60))
    assert harness.send(sync) == 202
    assert harness.process(sync["id"]) == "applied"


def test_offline_opens_the_breaker_and_online_lets_a_probe_through(harness: Harness) -> None:
    learn_upstream_id(harness.rt.store, "acme", UPSTREAM_ID, base_url=UPSTREAM_URL)
    offline = event("connection.status_changed", {"status": "offline"})
    assert harness.send(offline) == 202
    harness.process(offline["id"])
    view = harness.rt.breaker.show("acme")
    assert view.connection.state is State.OPEN
    assert view.connection.until and view.connection.until > view.now + 200
    assert [t.to_state for t in harness.store.transitions("acme")] == ["open"]
    online = event("connection.status_changed", {"status": "online"}, created_at=at(1))
    assert harness.send(online) == 202
    harness.process(online["id"])
    time.sleep(0.01)  # the open time now ends a millisecond after the webhook
    admission = harness.rt.breaker.admit("acme", "assets")
    assert admission.allowed and admission.probe  # the half-open probe, now


def test_reauthorization_halts_once_and_writes_one_customer_event(harness: Harness) -> None:
    learn_upstream_id(harness.rt.store, "acme", UPSTREAM_ID, base_url=UPSTREAM_URL)
    first = event("connection.reauthorization_required", {"reason": "credentials changed"})
    again = event(
        "connection.reauthorization_required",
        {"reason": "credentials changed"},
        created_at=at(5),
    )
    for hook in (first, again):
        assert harness.send(hook) == 202
        assert harness.process(hook["id"]) == "applied"
    assert harness.rt.breaker.show("acme").connection.state is State.HALTED
    [customer_event] = harness.store.events()
    assert customer_event.type == "connection.reauthorization_required"
    body = json.loads(customer_event.body_json)
    assert body["reason"]["kind"] == "auth"
    assert "credentials changed" in body["reason"]["message"]
    assert [t.to_state for t in harness.store.transitions("acme")] == ["halted"]


def test_an_event_for_an_unknown_connection_is_kept_reported_and_applied_once_known(
    harness: Harness,
) -> None:
    failed = event(
        "connection.error",
        {"code": "PERMISSION_DENIED", "message": "no access", "entity_type": "work-orders"},
    )
    assert harness.send(failed) == 202
    assert harness.process(failed["id"]) == "unmapped"
    assert "1 webhook event(s) kept for unknown upstream connection id(s) 0900000000004" in (
        render_upstream(harness.store)
    )
    # The first preflight reports it.
    learn_upstream_id(harness.rt.store, "acme", UPSTREAM_ID, base_url=UPSTREAM_URL)
    assert harness.store.upstream_events(status="received")[0].id == failed["id"]
    assert harness.process(failed["id"]) == "applied"
    rows = {r.entity_type: r for r in status_rows(harness.store, harness.rt.breaker, "acme")}
    report = rows["work-orders"].upstream_report or ""
    assert "[permission] connection.error" in report and "block_entity" in report
    assert rows["assets"].upstream_report is None
    grid = build_grid(harness.store, harness.rt.breaker, default_interval_s=900)
    cells = {c.entity_type: c for c in grid.cells() if c.connection_id == "acme"}
    assert cells["work-orders"].upstream_report == report  # the dashboard shows it too
    assert "PERMISSION_DENIED: no access" in render_upstream(harness.store)
    assert "unknown upstream connection" not in render_upstream(harness.store)


def test_sync_failed_is_recorded_and_classified(harness: Harness) -> None:
    learn_upstream_id(harness.rt.store, "acme", UPSTREAM_ID, base_url=UPSTREAM_URL)
    failed = event("sync.failed", {"entity_types": ["assets"], "message": "source timed out"})
    assert harness.send(failed) == 202
    assert harness.process(failed["id"]) == "applied"
    [aspect] = harness.store.upstream_aspects("acme")
    assert (aspect.aspect, aspect.kind, aspect.entity_types) == ("sync", "unavailable", "assets")
    assert harness.sent == []  # recorded, nothing started


def test_tricklers_are_cut_off_and_connections_are_bounded(tmp_path: Path, test_redis: Any) -> None:
    env = Env(
        store_url=f"sqlite:///{tmp_path}/store.db",
        upstream_url="http://127.0.0.1:9",
        ENTITY_SYNC_UPSTREAM_WEBHOOK_SECRET=SECRET,
    )
    server = ReceiverServer(
        "127.0.0.1",
        0,
        store=env.store(),
        secrets=[SECRET.encode()],
        publish=lambda _id: None,
        max_bytes=4096,
        request_deadline_s=2.0,
        max_concurrent=3,
    ).start()
    host, port = server.server_address[:2]
    try:
        idle = [socket.create_connection((str(host), port), timeout=10) for _ in range(3)]
        for sock in idle:
            sock.sendall(b"POST ")  # and then a byte now and then, never finishing
        time.sleep(0.3)
        with socket.create_connection((str(host), port), timeout=10) as extra:
            assert extra.recv(100) == b""  # closed unanswered: every slot is taken
        started = time.monotonic()
        for sock in idle:
            sock.sendall(b"/")
            assert sock.recv(100) == b""  # cut at the deadline
            sock.close()
        assert time.monotonic() - started < 5
        # Slots are free again once the cut handlers have returned (a moment).
        assert wait_for(lambda: _post_one(str(host), port)[0] == 401, 5, "a free slot")
    finally:
        server.close()


def _post_one(host: str, port: int) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", PATH, body=b"{}")
        answer = conn.getresponse()
        return answer.status, answer.read()
    except (ConnectionError, http.client.HTTPException):
        return 0, b""  # closed unanswered: no free slot yet


def test_the_answer_never_waits_for_the_enqueue(harness: Harness) -> None:
    """The event is kept, answered, and only then published: a hanging broker costs
    the sender nothing (the sweep sends what a failed publish dropped)."""

    def hanging_publish(_event_id: str) -> None:
        time.sleep(3)
        raise ConnectionError("broker away")

    harness.server.publish = hanging_publish
    hook = event("sync.completed", {"entity_types": ["assets"]})
    started = time.monotonic()
    assert harness.send(hook) == 202
    assert time.monotonic() - started < 0.5
    assert harness.store.get_upstream_event(hook["id"]) is not None


def test_offline_never_shortens_a_breaker_open_for_longer(harness: Harness) -> None:
    learn_upstream_id(harness.rt.store, "acme", UPSTREAM_ID, base_url=UPSTREAM_URL)
    harness.rt.breaker.force_open("acme", seconds=3000, reason="operator")
    offline = event("connection.status_changed", {"status": "offline"})
    assert harness.send(offline) == 202
    harness.process(offline["id"])
    view = harness.rt.breaker.show("acme")
    assert view.connection.until and view.connection.until > view.now + 2900
