"""The notifier against a slow real HTTP endpoint, real Redis and both stores.

Issue 19, findings 5 and 6: one delivery at a time per connection, fenced so
that a notifier whose lock expired (or whose Redis lost it) can neither POST
again nor record anything; dead-lettering counted from each event's creation,
so a gone endpoint drains its backlog at the retry pace; a worker without a
signing secret keeps events pending instead of dead-lettering them.

Several notifiers run at once in threads of this process, each with its own
store connection and webhook client, as worker processes would; the endpoint
is a ThreadingHTTPServer that counts the POSTs in flight.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis

from tests.support import Env
from worker.coordination import redis_keys
from worker.events import EventReason, EventStatus, EventType, build_event
from worker.outbox import notifier
from worker.outbox.notifier import DeliveryReport, deliver_pending, webhook_client, webhook_sender
from worker.secrets import SecretBox
from worker.settings import Settings
from worker.store import Connection, SqlStore
from worker.timeutil import canonical

pytestmark = pytest.mark.integration

SECRET = "whsec_outbox_delivery_secret_1"  # noqa: S105 - a throwaway test secret
GATE_TIMEOUT_S = 30.0


class SlowEndpoint:
    """A webhook endpoint that answers each POST after ``delay_s`` with ``status``.

    It records every POST's ``webhook-id`` and the most POSTs it ever had in
    flight at once. With ``gate_first``, the first POST waits until ``gate``
    is set: the test decides when that delivery ends.
    """

    def __init__(self, *, delay_s: float = 0.0, status: int = 200, gate_first: bool = False):
        self.delay_s = delay_s
        self.status = status
        self.gate_first = gate_first
        self.gate = threading.Event()
        self.ids: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with endpoint._lock:
                    first = not endpoint.ids
                    endpoint.ids.append(self.headers.get("webhook-id", ""))
                    endpoint.in_flight += 1
                    endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
                try:
                    if first and endpoint.gate_first:
                        endpoint.gate.wait(GATE_TIMEOUT_S)
                    elif endpoint.delay_s:
                        time.sleep(endpoint.delay_s)
                finally:
                    with endpoint._lock:
                        endpoint.in_flight -= 1
                self.send_response(endpoint.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def stop(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoints() -> Iterator[list[SlowEndpoint]]:
    started: list[SlowEndpoint] = []
    yield started
    for endpoint in started:
        endpoint.stop()


def _env(store_url: str, **extra: str) -> Env:
    return Env(
        store_url=store_url,
        upstream_url="http://127.0.0.1:9",
        ENTITY_SYNC_WEBHOOK_ALLOW_HTTP="true",
        ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE="true",
        ENTITY_SYNC_WEBHOOK_TIMEOUT="1",
        **extra,
    )


def _connection(store: SqlStore, url: str) -> str:
    connection_id = f"c-{uuid.uuid4().hex[:8]}"  # the notifier's warn-once memory is per id
    store.add_connection(
        Connection(id=connection_id, name=connection_id, entity_types=("assets",), webhook_url=url)
    )
    return connection_id


def _events(
    store: SqlStore, connection_id: str, count: int, *, age: timedelta = timedelta()
) -> list[str]:
    """``count`` events (halts and recoveries in turn), written ``age`` ago; their ids."""
    ids = []
    for _ in range(count):
        # Alternate, so the outbox does not fold an event into the one before.
        last = store.last_event_type(connection_id, None)
        kind = (
            EventType.RECOVERED
            if last == EventType.REAUTHORIZATION_REQUIRED
            else EventType.REAUTHORIZATION_REQUIRED
        )
        event = build_event(
            kind, connection_id=connection_id, entity_type=None, reason=EventReason("auth")
        )
        if age:
            written = canonical(datetime.now(UTC) - age)
            event = dataclasses.replace(event, created_at=written, next_attempt_at=written)
        assert store.add_event(event)
        ids.append(event.id)
    return ids


def _pass(
    env: Env, cache: redis.Redis, connection_id: str, settings: Settings | None = None
) -> DeliveryReport:
    """One notifier pass, as the notify task runs it, with its own store and client."""
    settings = settings or env.settings()
    with webhook_client(settings) as http:
        return deliver_pending(
            store=env.store(),
            cache=cache,
            secrets=SecretBox(env.vars["ENTITY_SYNC_SECRET_KEY"]),
            settings=settings,
            connection_id=connection_id,
            send=webhook_sender(http),
        )


def _in_thread(target: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(target()), daemon=True)
    thread.start()
    return thread, out


# --- finding 5: one delivery at a time, fenced ---------------------------------------


def test_notifiers_racing_on_a_slow_endpoint_deliver_each_event_once_one_at_a_time(
    store_url: str,
    test_redis: redis.Redis,
    endpoints: list[SlowEndpoint],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The audit's case scaled down: a pass outlives the lock's TTL many times
    # over (12 slow answers against a 1 s lock; after the fix the TTL is three
    # POST deadlines, 6 s, still shorter than the pass), while a new notifier
    # starts every 0.1 s, as the relay and the sweep start them.
    monkeypatch.setattr(notifier, "NOTIFY_LEASE_S", 1.0)
    endpoint = SlowEndpoint(delay_s=0.6)
    endpoints.append(endpoint)
    env = _env(store_url, ENTITY_SYNC_WEBHOOK_SECRET=SECRET)
    store = env.store()
    connection_id = _connection(store, endpoint.url)
    ids = _events(store, connection_id, 12)

    stop = threading.Event()
    reports: list[DeliveryReport] = []

    def notifier_loop() -> None:
        while not stop.is_set() and store.pending_events(connection_id):
            reports.append(_pass(env, test_redis, connection_id))
            time.sleep(0.1)

    threads = [threading.Thread(target=notifier_loop, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join(timeout=120)
    stop.set()

    assert Counter(endpoint.ids) == Counter(ids), "every event POSTed exactly once"
    assert endpoint.max_in_flight == 1
    rows = {event.id: event for event in store.events(connection_id=connection_id)}
    assert {row.status for row in rows.values()} == {EventStatus.DELIVERED}
    assert {row.attempts for row in rows.values()} == {1}
    assert sum(r.delivered for r in reports) == len(ids)
    assert any(r.busy for r in reports)  # the others were kept out, not merely late


def test_a_notifier_whose_lock_vanished_mid_post_records_nothing_and_stops(
    store_url: str, test_redis: redis.Redis, endpoints: list[SlowEndpoint]
) -> None:
    # Redis restarts while notifier A waits for its first answer: the lock is
    # gone, B takes it and delivers everything. A's answer then arrives.
    endpoint = SlowEndpoint(gate_first=True)
    endpoints.append(endpoint)
    env = _env(store_url, ENTITY_SYNC_WEBHOOK_SECRET=SECRET)
    store = env.store()
    connection_id = _connection(store, endpoint.url)
    first, *rest = _events(store, connection_id, 4)

    thread_a, report_a = _in_thread(lambda: _pass(env, test_redis, connection_id))
    _wait(lambda: len(endpoint.ids) == 1)
    test_redis.flushdb()
    report_b = _pass(env, test_redis, connection_id)
    endpoint.gate.set()
    thread_a.join(timeout=30)

    # A's POST in flight is the one duplicate a lost lock allows; A sent nothing after it.
    assert Counter(endpoint.ids) == Counter([first, first, *rest])
    assert report_b.delivered == 4
    assert report_a == [DeliveryReport(lost=True)]
    row = store.get_event(first)
    assert row is not None and row.status == EventStatus.DELIVERED and row.attempts == 1


def test_a_notifier_that_lost_its_lock_stops_before_its_next_post(
    store_url: str, test_redis: redis.Redis, endpoints: list[SlowEndpoint]
) -> None:
    # The lock expires while A waits for an answer and someone else holds it
    # now: A may record the answer it got (its fence is still the newest), but
    # it must not POST again.
    endpoint = SlowEndpoint(gate_first=True)
    endpoints.append(endpoint)
    env = _env(store_url, ENTITY_SYNC_WEBHOOK_SECRET=SECRET)
    store = env.store()
    connection_id = _connection(store, endpoint.url)
    first, *_rest = _events(store, connection_id, 3)

    thread_a, report_a = _in_thread(lambda: _pass(env, test_redis, connection_id))
    _wait(lambda: len(endpoint.ids) == 1)
    test_redis.set(redis_keys.notify_lease(connection_id), "another-notifier", px=60_000)
    endpoint.gate.set()
    thread_a.join(timeout=30)

    assert endpoint.ids == [first]
    assert report_a == [DeliveryReport(delivered=1, lost=True)]
    assert [e.status for e in store.pending_events(connection_id)] == [EventStatus.PENDING] * 2


def _wait(condition: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {condition}")
        time.sleep(0.02)


def test_a_long_backlog_drains_in_passes_bounded_by_the_task_budget(
    store_url: str, test_redis: redis.Redis, endpoints: list[SlowEndpoint]
) -> None:
    # A pass that ran on for a whole backlog at a slow endpoint would outlive
    # the task time limit (and, before the fix, its lock): it stops at the
    # budget and asks for another pass.
    endpoint = SlowEndpoint(delay_s=0.4)
    endpoints.append(endpoint)
    env = _env(store_url, ENTITY_SYNC_WEBHOOK_SECRET=SECRET, ENTITY_SYNC_TASK_TIME_BUDGET="1")
    store = env.store()
    connection_id = _connection(store, endpoint.url)
    ids = _events(store, connection_id, 6)

    first = _pass(env, test_redis, connection_id)
    assert first.more and 0 < first.delivered < len(ids)
    reports = [first]
    while reports[-1].more:
        reports.append(_pass(env, test_redis, connection_id))
    assert sum(r.delivered for r in reports) == len(ids)
    assert endpoint.ids == ids
    assert test_redis.get(redis_keys.notify_lease(connection_id)) is None  # given back


# --- finding 6: dead-lettering from creation, pruning, a missing secret ---------------


def test_a_gone_endpoint_drains_its_backlog_at_the_retry_pace_and_the_dead_are_pruned(
    store_url: str, test_redis: redis.Redis, endpoints: list[SlowEndpoint]
) -> None:
    # Five events written 25 h ago have waited behind each other for a
    # failing endpoint; one more was written an hour ago.
    endpoint = SlowEndpoint(status=503)
    endpoints.append(endpoint)
    env = _env(store_url, ENTITY_SYNC_WEBHOOK_SECRET=SECRET)
    store = env.store()
    connection_id = _connection(store, endpoint.url)
    old = _events(store, connection_id, 5, age=timedelta(hours=25))
    [young] = _events(store, connection_id, 1, age=timedelta(hours=1))

    report = _pass(env, test_redis, connection_id)

    # All five old ones are dead after one pass, not one a day; the endpoint
    # was tried once for them and once for the young one, which retries.
    assert (report.dead, report.failed) == (5, 1)
    assert endpoint.ids == [old[0], young]
    statuses = {e.id: e.status for e in store.events(connection_id=connection_id)}
    assert [statuses[i] for i in old] == [EventStatus.DEAD] * 5
    assert statuses[young] == EventStatus.PENDING

    # Until the young one is due, a pass (the sweep sends one every few seconds)
    # sends nothing and writes nothing, not even the fence.
    fence = "SELECT fence FROM notify_fences WHERE connection_id = ?"
    before = store._read(fence, (connection_id,))
    assert _pass(env, test_redis, connection_id) == DeliveryReport()
    assert store._read(fence, (connection_id,)) == before
    assert endpoint.ids == [old[0], young]

    # The dead go once past their retention window (the young one's is the latest row).
    settings = env.settings()
    later = datetime.now(UTC) + timedelta(days=settings.dead_event_retention_days)
    pruned = store.prune_history(
        before=canonical(later - timedelta(days=settings.history_retention_days)),
        dead_before=canonical(later),
    )
    assert pruned.dead_events == 5
    assert [e.id for e in store.events(connection_id=connection_id)] == [young]


def test_a_redelivered_old_event_gets_a_whole_retry_window_again(
    store_url: str, test_redis: redis.Redis, endpoints: list[SlowEndpoint]
) -> None:
    endpoint = SlowEndpoint(status=503)
    endpoints.append(endpoint)
    env = _env(store_url, ENTITY_SYNC_WEBHOOK_SECRET=SECRET)
    store = env.store()
    connection_id = _connection(store, endpoint.url)
    [event_id] = _events(store, connection_id, 1, age=timedelta(hours=30))
    assert _pass(env, test_redis, connection_id).dead == 1
    store.redeliver(event_id, now=canonical(datetime.now(UTC)))
    report = _pass(env, test_redis, connection_id)
    assert (report.dead, report.failed) == (0, 1)
    row = store.get_event(event_id)
    assert row is not None and row.status == EventStatus.PENDING


def test_a_worker_without_the_webhook_secret_keeps_events_pending_and_says_so_once(
    store_url: str,
    test_redis: redis.Redis,
    endpoints: list[SlowEndpoint],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(notifier, "NO_SECRET_RETRY_S", 0.0, raising=False)  # due at once
    caplog.set_level(logging.WARNING, logger="entity_sync.connections")
    endpoint = SlowEndpoint()
    endpoints.append(endpoint)
    env = _env(store_url)  # no ENTITY_SYNC_WEBHOOK_SECRET, no secret of its own
    store = env.store()
    connection_id = _connection(store, endpoint.url)
    ids = _events(store, connection_id, 2)

    for _ in range(3):
        report = _pass(env, test_redis, connection_id)
        assert (report.delivered, report.dead) == (0, 0)
    assert endpoint.ids == []
    rows = store.pending_events(connection_id)
    assert [e.id for e in rows] == ids
    assert {e.attempts for e in rows} == {0}  # nothing was sent, nothing counted
    assert "no webhook secret" in (rows[0].last_error or "")
    told = [r for r in caplog.records if "no webhook secret" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.ERROR
    assert told[0].__dict__["connection_id"] == connection_id

    # The secret arrives (a fixed deployment): everything goes out, in order.
    env.vars["ENTITY_SYNC_WEBHOOK_SECRET"] = SECRET
    assert _pass(env, test_redis, connection_id).delivered == 2
    assert endpoint.ids == ids


def test_a_url_signed_with_the_shared_secret_is_warned_about_once(
    store_url: str,
    test_redis: redis.Redis,
    endpoints: list[SlowEndpoint],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="entity_sync.connections")
    endpoint = SlowEndpoint()
    endpoints.append(endpoint)
    env = _env(store_url, ENTITY_SYNC_WEBHOOK_SECRET=SECRET)
    store = env.store()
    shared = _connection(store, endpoint.url)
    own = _connection(store, endpoint.url)
    box = SecretBox(env.vars["ENTITY_SYNC_SECRET_KEY"])
    store.set_webhook(
        own, url=endpoint.url, secret_ciphertext=box.encrypt("whsec_own_secret_of_this_one")
    )
    for _ in range(2):
        _events(store, shared, 1)
        _events(store, own, 1)
        assert _pass(env, test_redis, shared).delivered == 1
        assert _pass(env, test_redis, own).delivered == 1
    warned = [r for r in caplog.records if "no signing secret of its own" in r.getMessage()]
    assert [r.__dict__["connection_id"] for r in warned] == [shared]
    assert warned[0].levelno == logging.WARNING


def test_a_short_secret_stored_before_the_minimum_still_signs_and_is_warned_about_once(
    store_url: str,
    test_redis: redis.Redis,
    endpoints: list[SlowEndpoint],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="entity_sync.connections")
    endpoint = SlowEndpoint()
    endpoints.append(endpoint)
    env = _env(store_url)
    store = env.store()
    connection_id = _connection(store, endpoint.url)
    box = SecretBox(env.vars["ENTITY_SYNC_SECRET_KEY"])
    store.set_webhook(connection_id, url=endpoint.url, secret_ciphertext=box.encrypt("short"))
    for _ in range(2):
        _events(store, connection_id, 1)
        assert _pass(env, test_redis, connection_id).delivered == 1
    warned = [r for r in caplog.records if "shorter than 16 bytes" in r.getMessage()]
    assert len(warned) == 1 and warned[0].__dict__["connection_id"] == connection_id
    assert "short" not in warned[0].getMessage().replace("shorter", "")
