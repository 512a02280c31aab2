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
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support import Env, wait_for
from worker.inbound.actions import process_event
from worker.inbound.connection import Limits
from worker.inbound.receiver import PATH, ReceiverServer
from worker.ops.dashboard.data import build_grid
from worker.ops.status import render_upstream, status_rows
from worker.resilience.breaker import State
from worker.runtime import Runtime
from worker.store import SqlStore
from worker.store.inbound import BACKLOG_SQL
from worker.sync.preflight import learn_upstream_id
from worker.sync.retention import prune_history
from worker.timeutil import canonical

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
    # Logged by the minute: the first refusal of each status with its reason, the
    # rest counted into one summary line (a flood of refusals is a few lines).
    firsts = [r for r in caplog.records if "refused a webhook" in r.getMessage()]
    assert sorted(getattr(r, "http_status", 0) for r in firsts) == [400, 401, 411, 413, 422]
    harness.server.refusals.flush(final=True)
    [summary] = [r.getMessage() for r in caplog.records if "more webhook request" in r.getMessage()]
    assert summary.startswith("refused 8 more webhook request(s)")
    assert "401 x4" in summary
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
        limits=Limits(first_byte_s=1.0, headers_s=2.0, body_s=2.0, max_connections=3),
    ).start()
    host, port = server.server_address[:2]
    try:
        idle = [socket.create_connection((str(host), port), timeout=10) for _ in range(3)]
        for sock in idle:
            sock.sendall(b"POST ")  # and then a byte now and then, never finishing
        time.sleep(0.3)
        with socket.create_connection((str(host), port), timeout=10) as extra:
            assert extra.recv(100) == b""  # closed unanswered: the cap is reached
        for sock in idle:
            sock.sendall(b"/")
            answer = sock.recv(100)  # cut at the header deadline, with a 408
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            sock.close()
        # Connections are free again once the cut ones are closed (a moment).
        assert wait_for(lambda: _post_one(str(host), port)[0] == 401, 5, "a free connection")
        # A socket that connects and says nothing is closed at the first-byte deadline.
        with socket.create_connection((str(host), port), timeout=10) as silent:
            assert silent.recv(100) == b""
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


def test_every_exception_inside_a_request_gets_an_answer(
    harness: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19, finding 2: a signed body nested 20,000 deep raised RecursionError (only
    ValueError was caught): a traceback and no answer."""
    caplog.set_level(logging.INFO, logger="entity_sync.receiver")
    hook = event("sync.completed", {"entity_types": ["assets"]})
    deep = json.dumps(hook).replace('"assets"', "[" * 20_000 + "]" * 20_000).encode()
    assert len(deep) <= 4096 * 20  # signed, and within this harness's cap below
    harness.server.max_bytes = 65_536
    status, answer = harness.post(deep)
    assert status == 400 and "nested too deep" in str(answer["error"])
    # JSON the parser takes, deeper than an event may be: 422.
    nested: Any = "leaf"
    for _ in range(100):
        nested = {"n": nested}
    status, answer = harness.post(json.dumps(hook | {"data": {"x": nested}}).encode())
    assert status == 422 and "nested deeper than" in str(answer["error"])

    # A bug (here: the store raising what it never should) is a 500 and a log line.
    def broken(_event: Any) -> bool:
        raise RuntimeError("a bug in the store")

    monkeypatch.setattr(harness.store, "record_upstream_event", broken)
    status, answer = harness.post(json.dumps(hook).encode())
    assert status == 500 and answer == {"error": "bug"}
    [bug] = [r for r in caplog.records if "a bug while serving" in r.getMessage()]
    assert bug.exc_info is not None and "a bug in the store" in str(bug.exc_info[1])
    monkeypatch.undo()
    assert harness.send(hook) == 202  # and the receiver goes on


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "evt_nul\u0000"},
        {"connection_id": "0900000000\u00000042"},
        {"type": "sync.completed\u0000"},
        {"data": {"entity_types": ["assets"], "reason": "nul \u0000 here"}},
        {"data": {"nul\u0000key": True}},
        {"data": {"reason": "lone \ud800 surrogate"}},
    ],
    ids=["id", "connection_id", "type", "data-value", "data-key", "surrogate"],
)
def test_a_nul_anywhere_in_the_event_is_refused_on_every_store(
    harness: Harness, fields: dict[str, Any]
) -> None:
    """Issue 19, finding 4: on PostgreSQL a NUL in ``id`` or ``connection_id`` got 503 at
    every attempt while /healthz said ok; SQLite kept it."""
    hook = event("sync.completed", {"entity_types": ["assets"]}) | fields
    status, answer = harness.post(json.dumps(hook).encode())
    assert status == 422, answer
    assert "NUL" in str(answer["error"]) or "surrogate" in str(answer["error"])
    assert harness.store.upstream_events() == []
    assert _health(harness)[0] == 200
    assert harness.send(event("sync.completed", {"entity_types": ["assets"]})) == 202


def test_an_event_outside_the_freshness_window_is_refused_at_receipt(harness: Harness) -> None:
    """Issue 19, finding 3: a captured event was accepted again once its row was pruned, and
    an event dated 2099 took the connection's ordering slot for good."""
    max_age = harness.rt.settings.upstream_event_max_age_seconds
    too_old = event("connection.reauthorization_required", {}, created_at=at(-max_age))
    status, answer = harness.post(json.dumps(too_old).encode())
    assert status == 422 and "older than the" in str(answer["error"]), answer
    future = datetime.now(UTC) + timedelta(days=365 * 70)
    forged = event("sync.completed", {}, created_at=future.strftime("%Y-%m-%dT%H:%M:%SZ"))
    status, answer = harness.post(json.dumps(forged).encode())
    assert status == 422 and "ahead of this clock" in str(answer["error"]), answer
    near = event("sync.completed", {}, created_at=at(600 + 60))  # a minute ahead: the skew
    assert harness.send(near) == 202
    assert [e.id for e in harness.store.upstream_events()] == [near["id"]]


def test_a_replay_inside_the_window_stays_a_duplicate_after_the_retention_ran(
    harness: Harness,
) -> None:
    learn_upstream_id(harness.rt.store, "acme", UPSTREAM_ID, base_url=UPSTREAM_URL)
    hook = event("connection.reauthorization_required", {"reason": "changed"})
    assert harness.send(hook) == 202
    assert harness.process(hook["id"]) == "applied"
    # Retention runs (as if a while later, with history kept only a minute): the id stays,
    # because a replay of it is still inside the freshness window.
    settings = harness.rt.settings.model_copy(update={"history_retention_days": 60 / 86_400})
    prune_history(harness.store, settings, now=datetime.now(UTC) + timedelta(minutes=30))
    assert harness.store.get_upstream_event(hook["id"]) is not None
    assert harness.send(hook) == 200  # a duplicate: nothing is done again
    assert len(harness.store.events()) == 1  # one customer event, not two


def test_an_event_processed_after_the_window_is_stale_on_its_first_attempt(
    harness: Harness,
) -> None:
    """Issue 19, finding 3: the age check applied only to events processed again."""
    learn_upstream_id(harness.rt.store, "acme", UPSTREAM_ID, base_url=UPSTREAM_URL)
    hook = event("connection.reauthorization_required", {"reason": "changed"})
    assert harness.send(hook) == 202
    # No worker processed it while it was fresh (its row aged, as in an outage).
    max_age = harness.rt.settings.upstream_event_max_age_seconds
    with harness.store._write() as tx:
        tx.execute(
            "UPDATE upstream_events SET created_at = ? WHERE id = ?",
            (canonical(datetime.now(UTC) - timedelta(seconds=max_age + 60)), hook["id"]),
        )
    assert harness.process(hook["id"]) == "stale"
    assert harness.rt.breaker.show("acme").connection.state is State.CLOSED
    assert harness.store.events() == []


def test_health_reads_a_bounded_summary(harness: Harness) -> None:
    """Issue 19, finding 8: the unauthenticated /healthz ran a GROUP BY over every event."""
    old = canonical(datetime.now(UTC) - timedelta(minutes=5))
    with harness.store._write() as tx:
        tx.executemany(
            "INSERT INTO upstream_events (id, type, upstream_connection_id, created_at,"
            " received_at, body, status) VALUES (?, 'sync.completed', 'u1', ?, ?, '{}', ?)",
            [(f"done-{i}", old, old, "applied") for i in range(3000)]
            + [(f"waiting-{i}", old, old, "received") for i in range(1200)],
        )
    assert _health(harness) == (200, {"status": "ok", "waiting": "1000+"})
    now = canonical(datetime.now(UTC))
    with harness.store._write() as tx:
        tx.execute("DELETE FROM upstream_events WHERE status = 'received'")
        tx.executemany(
            "INSERT INTO upstream_events (id, type, upstream_connection_id, created_at,"
            " received_at, body, status) VALUES (?, 'sync.completed', 'u1', ?, ?, '{}', ?)",
            [(f"waiting-{i}", old, old, "received") for i in range(89)]
            + [(f"just-in-{i}", now, now, "received") for i in range(5)],  # not late yet
        )
    assert _health(harness) == (200, {"status": "ok", "waiting": "89"})
    # Read through the (status, received_at) index, never a scan of the table.
    plan = _plan(harness.store, BACKLOG_SQL, ("received", old, 1000))
    assert "upstream_events_by_status" in plan, plan
    assert "SCAN upstream_events" not in plan and "Seq Scan" not in plan, plan


def _health(harness: Harness) -> tuple[int, dict[str, Any]]:
    host, port = harness.server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def _plan(store: SqlStore, statement: str, params: tuple[Any, ...]) -> str:
    if store.dialect.name == "sqlite":
        rows = store._read(f"EXPLAIN QUERY PLAN {statement}", params)
        return "\n".join(str(row[-1]) for row in rows)
    with store._write() as tx:
        tx.execute("ANALYZE upstream_events")  # the planner sees the rows just written
    rows = store._read(f"EXPLAIN {statement}", params)
    return "\n".join(str(row[0]) for row in rows)


def test_a_sender_that_expects_100_continue_is_told_to_go_on(harness: Harness) -> None:
    body = json.dumps(event("sync.completed", {"entity_types": ["assets"]})).encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"Expect: 100-continue\r\nX-Webhook-Signature: {signature(SECRET, body)}\r\n\r\n"
    ).encode()
    host, port = harness.server.server_address[:2]
    with socket.create_connection((str(host), port), timeout=10) as sock:
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert sock.recv(4096).startswith(b"HTTP/1.1 202 Accepted\r\n")


def test_publishes_waiting_on_a_hung_broker_are_bounded(
    harness: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that hangs holds no request and no unbounded queue: the sweep sends the rest."""
    monkeypatch.setattr("worker.inbound.receiver.MAX_PUBLISHES_WAITING", 2)
    caplog.set_level(logging.INFO, logger="entity_sync.receiver")
    release = threading.Event()
    published: list[str] = []

    def hung(event_id: str) -> None:
        release.wait(30)
        published.append(event_id)

    harness.server.publish = hung
    hooks = [event("sync.completed", {"entity_types": ["assets"]}) for _ in range(5)]
    assert [harness.send(hook) for hook in hooks] == [202] * 5
    # Each publish is queued once its answer is out and the client has closed (a moment).
    wait_for(
        lambda: len([r for r in caplog.records if "left to the sweep" in r.getMessage()]) == 3,
        10,
        "three publishes left to the sweep",
    )
    release.set()
    wait_for(lambda: len(published) == 2, 10, "the two waiting publishes")
    assert len(harness.store.upstream_events(status="received")) == 5  # all kept for the sweep
