"""Sentry: one tagged, grouped event per transition; expected outcomes dropped; no secret leaves.

Everything is checked on what would really be sent: the serialized envelopes,
caught by a transport that keeps them (in process) or by a small stand-in for
Sentry's ingest endpoint (a real worker).
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from celery import Celery
from celery.exceptions import Retry
from celery.schedules import crontab
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from harness.testing.sandbox import SandboxHandle, running_sandbox
from tests.support import Env, WorkerProcess, wait_for
from worker import redaction
from worker.celeryapp.app import BEAT_SCHEDULE
from worker.client import EntitySyncClient
from worker.errors import (
    AuthFailed,
    Blocked,
    Deferred,
    Halted,
    Kind,
    RetryLater,
    Unavailable,
)
from worker.jobs import SYNC_ENTITY
from worker.logs import bound, connection_log, log
from worker.observability import sentry as es_sentry
from worker.observability.sentry_throttle import EVENTS_PER_KIND
from worker.outbox.transitions import TransitionRecorder
from worker.resilience.breaker_types import Actor, State
from worker.resilience.guard import StateChange
from worker.secrets import SecretBox, generate_key
from worker.settings import Settings
from worker.store import open_store

pytestmark = pytest.mark.integration

DSN = "http://publickey@127.0.0.1:9/42"  # nothing listens: only the capturing transport sends


# -- what would be sent ---------------------------------------------------------------


class CapturingTransport(Transport):
    """Keeps each envelope's serialized bytes instead of sending it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.sent.append(envelope.serialize())

    def raw(self) -> bytes:
        return b"\n".join(self.sent)

    def items(self, item_type: str) -> list[dict[str, Any]]:
        return [p for body in self.sent for t, p in parse_envelope(body) if t == item_type]


def parse_envelope(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(item type, payload) of each item of one serialized envelope."""
    lines = body.split(b"\n")
    items: list[tuple[str, dict[str, Any]]] = []
    i = 1  # line 0 is the envelope header
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        header = json.loads(lines[i])
        i += 1
        if "length" in header:
            rest = b"\n".join(lines[i:])
            payload, rest = rest[: header["length"]], rest[header["length"] + 1 :]
            lines, i = [b"", *rest.split(b"\n")], 1
        else:
            payload = lines[i]
            i += 1
        if header.get("type") in ("event", "check_in", "transaction"):
            items.append((header["type"], json.loads(payload)))
    return items


@pytest.fixture
def captured(tmp_path: Path) -> Iterator[CapturingTransport]:
    transport = CapturingTransport()
    settings = Settings(sentry_dsn=DSN, store_url=f"sqlite:///{tmp_path}/store.db")
    assert es_sentry.init_sentry(settings, transport=transport, beat_schedule=BEAT_SCHEDULE)
    yield transport
    sentry_sdk.flush()
    sentry_sdk.init()  # no DSN: an inactive client for whatever runs next


def _flush(transport: CapturingTransport) -> CapturingTransport:
    sentry_sdk.flush(timeout=5)
    return transport


def _halt(connection_id: str = "acme", token: str | None = None) -> StateChange:
    detail = "token expired" + (f" (sent Bearer {token})" if token else "")
    return StateChange(
        connection_id,
        None,
        State.CLOSED,
        State.HALTED,
        "auth connection: token expired",
        None,
        cause=AuthFailed(detail, status=401, code="AUTHENTICATION_FAILED"),
    )


# -- set-up ---------------------------------------------------------------------------


def test_without_a_dsn_nothing_starts() -> None:
    assert es_sentry.init_sentry(Settings(sentry_dsn=None)) is False


def test_beat_entries_too_frequent_for_crons_get_heartbeats_instead() -> None:
    excluded, heartbeats = es_sentry.beat_monitors(
        {
            **BEAT_SCHEDULE,
            "nightly": {"task": "t.nightly", "schedule": crontab(hour=3, minute=0)},
            "every-5-min": {"task": "t.five", "schedule": timedelta(minutes=5)},
            "every-90-s": {"task": "t.ninety", "schedule": 90.0},
        }
    )
    # Sentry Crons watches whole minutes and crontabs natively...
    assert not any(p in ("^nightly$", "^every\\-5\\-min$") for p in excluded)
    assert "t.nightly" not in heartbeats and "t.five" not in heartbeats
    # ...and cannot watch sub-minute ones: those send throttled heartbeats.
    for name, entry in BEAT_SCHEDULE.items():
        assert f"^{name}$".replace("-", "\\-") in excluded
        assert heartbeats[str(entry["task"])] == (name, 1)
    assert heartbeats["t.ninety"] == ("every-90-s", 2)


def test_a_heartbeat_is_sent_at_most_once_a_minute(captured: CapturingTransport) -> None:
    class Task:
        name = "entity_sync.housekeeping.tick"

    es_sentry._last_beat.clear()
    for _ in range(30):
        es_sentry._heartbeat_ok(Task())
    es_sentry._heartbeat_error(Task())
    checkins = _flush(captured).items("check_in")
    assert [(c["monitor_slug"], c["status"]) for c in checkins] == [
        ("housekeeping", "ok"),
        ("housekeeping", "error"),
    ]
    assert checkins[0]["monitor_config"]["schedule"] == {
        "type": "interval",
        "value": 1,
        "unit": "minute",
    }


# -- one event per transition ---------------------------------------------------------


def test_a_halt_is_one_event_with_tags_and_per_connection_grouping(
    captured: CapturingTransport,
) -> None:
    assert es_sentry.report_transition(_halt()) is not None
    [event] = _flush(captured).items("event")
    assert event["level"] == "error"
    assert event["fingerprint"] == ["entity-sync", "acme", "auth"]
    assert event["tags"]["connection_id"] == "acme"
    assert event["tags"]["error_kind"] == "auth"
    assert event["tags"]["error_scope"] == "connection"
    assert "entity_type" not in event["tags"]  # the connection, not one entity type
    assert event["message"] == "acme: connection halted (auth)"
    assert event["contexts"]["transition"]["http_status"] == 401


def test_an_entity_type_opening_is_a_warning_grouped_by_its_kind(
    captured: CapturingTransport,
) -> None:
    change = StateChange(
        "acme",
        "work-orders",
        State.CLOSED,
        State.OPEN,
        "unavailable",
        1.0,
        cause=Unavailable("503"),
    )
    es_sentry.report_transition(change)
    [event] = _flush(captured).items("event")
    assert event["level"] == "warning"
    assert event["fingerprint"] == ["entity-sync", "acme", "unavailable"]
    assert event["tags"]["entity_type"] == "work-orders"
    assert event["tags"]["error_scope"] == "entity_type"


def test_the_recorder_reports_transitions_that_need_a_person_and_nothing_else(
    captured: CapturingTransport, tmp_path: Path
) -> None:
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    relayed: list[str] = []
    recorder = TransitionRecorder(store, relayed.append)
    unavailable = Unavailable("503", status=503)
    recorder(_halt())  # needs re-authorisation: reported
    recorder(_halt())  # a flushed Redis forgot the halt: the outbox knows it is no news
    recorder(StateChange("acme", None, State.CLOSED, State.PAUSED, "rate_limited", 2.0))  # a 429
    recorder(StateChange("acme", None, State.HALTED, State.CLOSED, "status healthy", None))
    recorder(
        StateChange("acme", None, State.HALF_OPEN, State.OPEN, "probe", 3.0, cause=unavailable)
    )
    recorder(
        StateChange(
            "acme", None, State.CLOSED, State.OPEN, "maintenance", 3.0, actor=Actor.OPERATOR
        )
    )
    events = _flush(captured).items("event")
    assert [e["message"] for e in events] == ["acme: connection halted (auth)"]
    # Every one of them is still kept in the store.
    assert len(store.transitions("acme")) == 6


# -- expected outcomes ----------------------------------------------------------------


@pytest.fixture
def celery_app() -> Celery:
    app = Celery("sentry-test", broker="memory://")

    @app.task(name="t.deferred")
    def deferred(**_: Any) -> None:
        raise Deferred("connection open", until=0.0)

    @app.task(name="t.halted")
    def halted(**_: Any) -> None:
        raise Halted("connection acme is halted")

    @app.task(name="t.blocked")
    def blocked(**_: Any) -> None:
        raise Blocked("work-orders blocked: permission")

    @app.task(name="t.retry_later")
    def retry_later(**_: Any) -> None:
        raise RetryLater("503", kind=Kind.UNAVAILABLE)

    @app.task(name="t.celery_retry")
    def celery_retry(**_: Any) -> None:
        raise Retry("again in a minute")

    @app.task(name="t.bug")
    def bug(**_: Any) -> None:
        raise Unavailable("upstream answered 503", status=503)

    return app


def test_expected_outcomes_in_a_task_are_not_reported_and_a_bug_is_tagged(
    captured: CapturingTransport, celery_app: Celery
) -> None:
    payload = {"connection_id": "acme", "entity_type": "assets"}
    for name in ("t.deferred", "t.halted", "t.blocked", "t.retry_later", "t.celery_retry"):
        celery_app.tasks[name].apply(kwargs=payload)
    assert _flush(captured).items("event") == []

    celery_app.tasks["t.bug"].apply(kwargs=payload, task_id="task-123")
    [event] = _flush(captured).items("event")
    assert event["exception"]["values"][-1]["type"] == "Unavailable"
    assert event["tags"]["connection_id"] == "acme"
    assert event["tags"]["entity_type"] == "assets"
    assert event["tags"]["task_id"] == "task-123"
    assert event["tags"]["error_kind"] == "unavailable"


def test_connection_log_warnings_stay_in_the_log_and_errors_carry_bound_context(
    captured: CapturingTransport,
) -> None:
    with bound(connection_id="acme", entity_type="assets", task_id="t-1"):
        connection_log.warning("closed -> open: unavailable")
        log.error("job rejected: bad payload")
    [event] = _flush(captured).items("event")
    assert event["logentry"]["message"].startswith("job rejected")
    assert event["tags"]["connection_id"] == "acme"
    assert event["tags"]["entity_type"] == "assets"
    assert event["tags"]["task_id"] == "t-1"


def test_a_flood_of_one_problem_sends_a_few_events_and_counts_the_rest(
    captured: CapturingTransport,
) -> None:
    for n in range(25):
        log.error("job rejected: %s", f"entity_sync.sync_entity: bad payload {n}")
    log.error("store unreachable: %s", "connection refused")  # another problem still goes out
    events = _flush(captured).items("event")
    rejected = [e for e in events if e["logentry"]["message"].startswith("job rejected")]
    assert len(rejected) == EVENTS_PER_KIND
    assert [e["logentry"]["message"] for e in events][-1].startswith("store unreachable")
    assert all("dropped_repeats" not in e.get("extra", {}) for e in events)


# -- secrets --------------------------------------------------------------------------


def _leaky(token: str, ciphertext: str) -> None:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    auth_line = f"Authorization: Bearer {token}"
    value = token  # an innocent name: only registration catches it
    request = {"url": "https://api.example/v1/assets", "headers": headers}
    described = f"SliceTarget(connection_id='acme', token='{token}', base_url='x')"
    stored = ciphertext
    raise RuntimeError(f"upstream refused {auth_line} ({request}, {described}, {stored}, {value})")


def test_a_token_appears_nowhere_in_what_would_be_sent(captured: CapturingTransport) -> None:
    token = f"tok-live-{uuid.uuid4().hex}"
    # Never registered: caught by its shape (Bearer, Basic) or by its name alone.
    other_token = f"sk_{uuid.uuid4().hex}"
    ciphertext = SecretBox(generate_key()).encrypt(token)
    redaction.register_secret(token)

    logging.getLogger("entity_sync").info("calling upstream with token %s", token)
    sentry_sdk.add_breadcrumb(
        category="http", message=f"GET /assets Bearer {other_token}", data={"api_key": token}
    )
    sentry_sdk.set_extra("debug", {"token": token, "note": f"password was {token}"})
    sentry_sdk.set_context("upstream", {"authorization": f"Basic {other_token}"})
    sentry_sdk.set_tag("odd", token[:30])
    try:
        _leaky(token, ciphertext)
    except RuntimeError:
        sentry_sdk.capture_exception()
    sentry_sdk.capture_message(f"halted: Authorization: Bearer {other_token}")
    es_sentry.report_transition(_halt(token=token))

    raw = _flush(captured).raw()
    assert len(captured.items("event")) == 3
    # No token, and no piece of one (the source lines Sentry shows hold "tok-live-").
    for piece in (token, token[:16], token[-16:], token[9:21]):
        assert piece.encode() not in raw, piece
    assert other_token.encode() not in raw
    assert ciphertext[:40].encode() not in raw
    assert b"[Filtered]" in raw
    # Redacted, not dropped: the rest of the story is still there.
    [exc_event] = [e for e in captured.items("event") if "exception" in e]
    frames = exc_event["exception"]["values"][-1]["stacktrace"]["frames"]
    assert frames[-1]["function"] == "_leaky"
    assert frames[-1]["vars"]["headers"]["Accept"] == "'application/json'"
    assert frames[-1]["vars"]["token"] == "[Filtered]"
    assert frames[-1]["vars"]["value"] == "'[Filtered]'"


def test_a_truncated_secret_leaves_no_prefix() -> None:
    token = f"tok-{uuid.uuid4().hex}"
    redaction.register_secret(token)
    assert redaction.redact(f"target=Target(token='{token[:14]}...") == (
        "target=Target(token='[Filtered]..."
    )


# -- a real worker, a real 401 ----------------------------------------------------------


class IngestStandIn:
    """A tiny stand-in for Sentry's ingest: stores every envelope POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                stand_in.paths.append(self.path)
                stand_in.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.dsn = f"http://publickey@127.0.0.1:{self.port}/42"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def items(self, item_type: str) -> list[dict[str, Any]]:
        return [p for body in list(self.bodies) for t, p in parse_envelope(body) if t == item_type]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(preset="empty") as handle:
        yield handle


@pytest.mark.integration
def test_a_401_seen_by_many_jobs_is_one_sentry_event_without_the_token(
    sandbox: SandboxHandle, test_redis: Any, worker_factory: list[WorkerProcess], tmp_path: Path
) -> None:
    token = f"tok-{uuid.uuid4().hex[:12]}"
    conn = f"acme-{uuid.uuid4().hex[:6]}"  # other tests may share this Redis and broker
    sandbox.put_connection(
        token,
        {
            "seed": 5,
            "default_size": 300,
            "latency_ms": 20,
            "scenarios": [{"name": "auth_fail_from_page", "page": 3, "status_401": True}],
        },
    )
    ingest = IngestStandIn()
    try:
        env = Env(
            store_url=f"sqlite:///{tmp_path}/store.db",
            upstream_url=sandbox.url,
            ENTITY_SYNC_SENTRY_DSN=ingest.dsn,
        )
        types = ("sites", "locations", "assets", "work-orders")
        env.add_connection(conn, token, types)
        for n in range(2):
            worker_factory.append(
                WorkerProcess(env, tmp_path / f"w{n}.log", concurrency=8, beat=n == 0).start()
            )
        client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
        for entity in types * 3:
            client.send(SYNC_ENTITY, {"connection_id": conn, "entity_type": entity})
        store = env.store()
        wait_for(
            lambda: any(t.to_state == "halted" for t in store.transitions(conn)),
            60,
            "the halt",
            worker_factory[0],
        )
        wait_for(
            lambda: any(e["tags"].get("connection_id") == conn for e in ingest.items("event")),
            30,
            "the Sentry event",
            worker_factory[0],
        )
        # Beat's housekeeping runs every second: its heartbeat proves the cron monitor.
        wait_for(
            lambda: [c for c in ingest.items("check_in") if c["status"] == "ok"],
            30,
            "a beat heartbeat check-in",
            worker_factory[0],
        )
        for worker in worker_factory:
            worker.stop()  # flushes what is queued; nothing may come after
        everything = b"\n".join(ingest.bodies)
        assert token.encode() not in everything
        events = [e for e in ingest.items("event") if conn.encode() in json.dumps(e).encode()]
        assert len(events) == 1, [e.get("message") or e.get("logentry") for e in events]
        [event] = events
        assert event["message"] == f"{conn}: connection halted (auth)"
        assert event["fingerprint"] == ["entity-sync", conn, "auth"]
        assert event["tags"]["connection_id"] == conn
        assert event["tags"]["error_kind"] == "auth"
        assert event["tags"]["error_scope"] == "connection"
        assert event["tags"]["entity_type"] in types  # the task that saw it
        assert event["tags"]["task_id"]
        assert event["contexts"]["transition"]["http_status"] == 401
        assert all(p == "/api/42/envelope/" for p in ingest.paths)
        slugs = {c["monitor_slug"] for c in ingest.items("check_in")}
        assert "housekeeping" in slugs  # the tick (worker/celeryapp/app.py BEAT_SCHEDULE)
    finally:
        ingest.stop()
