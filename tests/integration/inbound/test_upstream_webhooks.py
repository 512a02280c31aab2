"""The unified API's webhooks end to end: the sandbox sends them, `entity-sync receiver`
keeps them, a real worker acts on them, and the customer hears what it must."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pytest

from harness.testing.sandbox import SandboxHandle, running_sandbox
from tests.support import ROOT, Env, WebhookReceiver, WorkerProcess, wait_for, wait_for_runs
from worker.client import EntitySyncClient
from worker.resilience.breaker import State
from worker.runtime import Runtime
from worker.store import RunStatus

pytestmark = pytest.mark.integration

UPSTREAM_SECRET = "upstream-signing-secret-42"
CUSTOMER_SECRET = "whsec_customer_0123456789"


class ReceiverProcess:
    """`entity-sync receiver --port 0` in a subprocess, as it is run."""

    def __init__(self, env: Env, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "worker.ops.cli", "receiver", "--port", "0"],
            env=env.process_env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.proc.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stdout, lines), daemon=True).start()
        line = lines.get(timeout=30)
        assert line.startswith("RECEIVER LISTENING "), line + self.log()
        self.url = line.split()[-1]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(preset="empty") as handle:
        yield handle


def test_webhooks_from_the_sandbox_sync_open_probe_and_halt_with_one_notification(
    sandbox: SandboxHandle,
    test_redis: Any,
    worker_factory: list[WorkerProcess],
    tmp_path: Path,
    store_url: str,
) -> None:
    token = f"tok-{uuid.uuid4().hex[:10]}"
    sandbox.put_connection(token, {"seed": 11, "default_size": 60, "webhooks": ["sync"]})
    upstream_id = sandbox.api(token).get("/api/integrations/current").json()["data"]["id"]
    customer = WebhookReceiver(CUSTOMER_SECRET).start()
    env = Env(
        store_url=store_url,
        upstream_url=sandbox.url,
        ENTITY_SYNC_UPSTREAM_WEBHOOK_SECRET=UPSTREAM_SECRET,
        ENTITY_SYNC_WEBHOOK_SECRET=CUSTOMER_SECRET,
        ENTITY_SYNC_WEBHOOK_ALLOW_HTTP="true",
        ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE="true",
    )
    env.add_connection("acme", token, ("assets", "sites"), webhook_url=customer.url)
    receiver = ReceiverProcess(env, tmp_path / "receiver.log")
    try:
        sandbox.set_webhooks(receiver.url, UPSTREAM_SECRET)
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        worker_factory.append(worker)
        store = env.store()
        client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
        first = client.sync_connection("acme")
        assert {
            r.status for r in wait_for_runs(store, first, ["assets", "sites"], timeout_s=60)
        } == {RunStatus.SUCCEEDED}
        # The first preflight told us the upstream's id of this connection.
        assert store.upstream_connection_id("acme") == upstream_id

        # sync.completed (sent by the sandbox after a mutation) -> a sync within seconds.
        changes = sandbox.mutate(token, updates=3, entities=["assets"])
        changed = set(changes["assets"]["updated"])
        sent_at = time.monotonic()
        [hook] = wait_for(
            lambda: store.upstream_events(status="applied"), 10, "the sync.completed webhook"
        )
        assert hook.type == "sync.completed"
        [run] = wait_for_runs(store, f"upstream-{hook.id}", ["assets"], timeout_s=20)
        assert run.status == RunStatus.SUCCEEDED and run.trigger == "upstream"
        assert time.monotonic() - sent_at < 15
        stored = {r.key: r for r in store.records("acme", "assets")}
        truth = {r["key"]: r for r in sandbox.truth(token, "assets")}
        assert all(stored[k].data == truth[k] for k in changed)

        # offline opens the breaker; online lets a probe run now.
        rt = Runtime(settings=env.settings())
        sandbox.emit(token, "connection.status_changed", {"status": "offline"})
        wait_for(lambda: rt.breaker.show("acme").connection.state is State.OPEN, 10, "breaker open")
        sandbox.emit(token, "connection.status_changed", {"status": "online"})

        def probe_due() -> bool:
            view = rt.breaker.show("acme")
            return view.connection.state is State.CLOSED or (
                view.connection.until is not None and view.connection.until <= view.now
            )

        wait_for(probe_due, 10, "the breaker to let a probe through")
        again = client.sync_connection("acme", entity_types=["assets"])
        [run] = wait_for_runs(store, again, ["assets"], timeout_s=30)
        assert run.status == RunStatus.SUCCEEDED
        assert rt.breaker.show("acme").connection.state is State.CLOSED

        # Re-authorisation by webhook: halted, ONE customer event, no call before it.
        sandbox.reset_stats()
        event = sandbox.revoke(token)
        assert event is not None
        [notice] = wait_for(
            lambda: customer.of_type("connection.reauthorization_required"),
            20,
            "the customer's re-authorisation event",
            worker,
        )
        # Not one data call, not one 401, before the customer heard it. (Beat's slow
        # probe of a halted connection may ask the status endpoint meanwhile.)
        before = [
            r
            for r in sandbox.token_stats(token).get("requests", [])
            if datetime.fromisoformat(r["wall"].replace("Z", "+00:00")).timestamp()
            < notice["_arrived"]
        ]
        assert [r for r in before if r["path"].startswith("/api/eam/")] == []
        assert [r for r in before if r["status"] == 401] == []
        assert notice["connection_id"] == "acme"
        assert notice["reason"]["kind"] == "auth"
        assert rt.breaker.show("acme").connection.state is State.HALTED
        # The unified API sends it again (its 10 s retry): one row, nothing new.
        assert sandbox.emit(token, event["type"], event["data"], id=event["id"])["status"] == 200
        time.sleep(3)
        wait_for(lambda: not store.events(status="pending"), 20, "the outbox to drain")
        assert len(customer.of_type("connection.reauthorization_required")) == 1
        assert [t.to_state for t in store.transitions("acme") if t.to_state == "halted"] == [
            "halted"
        ]
        assert len([e for e in store.upstream_events() if e.id == event["id"]]) == 1
        assert customer.bad_signatures == 0
    finally:
        receiver.stop()
        customer.stop()


class Collector:
    """A local endpoint that records each webhook and whether its signature verifies."""

    def __init__(self) -> None:
        import hashlib
        import hmac
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        collector = self
        self.events: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                mac = hmac.new(UPSTREAM_SECRET.encode(), body, hashlib.sha256).hexdigest()
                event = json.loads(body)
                event["_verified"] = self.headers["X-Webhook-Signature"] == f"sha256={mac}"
                collector.events.append(event)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def types(self) -> list[str]:
        return [
            e["type"] + (f":{e['data']['status']}" if "status" in e["data"] else "")
            for e in self.events
        ]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_the_sandbox_sends_what_its_switches_say_and_one_event_on_demand(
    tmp_path: Path,
) -> None:
    collector = Collector()
    token = "tok-switches"
    config = {
        "connections": {
            token: {
                "id": "09000000000077",
                "default_size": 5,
                "webhooks": ["reauthorization", "status"],
                "scenarios": [
                    {"name": "offline", "after_s": 0.5, "for_s": 1.0},
                    {"name": "auth_fail_from_page", "page": 1, "after_s": 2.0},
                ],
            }
        }
    }
    try:
        with running_sandbox(
            config, webhook_url=collector.url, webhook_secret=UPSTREAM_SECRET
        ) as sandbox:
            wait_for(
                lambda: (
                    collector.types()[:2]
                    == ["connection.status_changed:offline", "connection.status_changed:online"]
                ),
                10,
                "offline then online",
            )
            time.sleep(0.6)  # past after_s of the auth scenario
            assert sandbox.api(token).get("/api/eam/assets").status_code == 401
            wait_for(
                lambda: "connection.reauthorization_required" in collector.types(),
                10,
                "the re-authorisation webhook",
            )
            done = subprocess.run(
                [sys.executable, "-m", "worker.ops.cli", "sandbox-webhook", token, "sync.failed",
                 "--data", '{"entity_types": ["assets"], "message": "boom"}',
                 "--sandbox-url", sandbox.url],
                capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            assert collector.events[-1]["type"] == "sync.failed"
            assert len(collector.events) == 4
            assert all(e["_verified"] for e in collector.events)
            assert {e["connection_id"] for e in collector.events} == {"09000000000077"}
            assert [s["status"] for s in sandbox.webhooks_sent()] == [204] * 4
    finally:
        collector.stop()
