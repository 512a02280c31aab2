"""`entity-sync demo`: the whole product on one machine, end to end.

Starts the sandbox (preset ``demo``), a real Celery worker and the receiver of
the unified API's webhooks (`entity-sync receiver`), registers the demo
connections in a fresh SQLite store under ``var/demo``, syncs them all, then
has the sandbox announce by webhook that one customer's credentials changed
(the connection halts and the customer is told, without a failed call),
prints the status table and the throughput, and stops what it started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from harness.demo_receiver import DemoReceiver
from harness.testing.sandbox import SandboxHandle, running_sandbox
from worker.client import EntitySyncClient
from worker.coordination.client import redis_client
from worker.ops.status import render_table, status_rows, wait_for_request
from worker.outbox.webhooks import new_secret
from worker.runtime import Runtime
from worker.secrets import SecretBox, generate_key
from worker.settings import Settings
from worker.store import Connection, RunStatus, SqlStore, open_store

DEMO_DIR = Path("var/demo")
# Its credentials change after the syncs, and the unified API says so by webhook.
REVOKED_BY_WEBHOOK = ("initech", "demo-initech")
WORKER_READY_TIMEOUT_S = 60.0
SYNC_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class DemoConnection:
    """A connection the demo registers, the sandbox token it uses, and what to expect."""

    id: str
    name: str
    token: str
    healthy: bool = True  # a broken one ends in its own state, which is no demo failure


DEMO_CONNECTIONS = (
    DemoConnection("acme-plant-3", "Acme Plant 3 (Maximo)", "demo-acme"),
    DemoConnection("globex-refinery", "Globex Refinery (SAP PM), changing", "demo-globex"),
    DemoConnection("initech", "Initech Facilities (Fiix): re-auth by webhook", "demo-initech"),
    DemoConnection("umbrella-labs", "Umbrella Labs (UpKeep), shuffled ties", "demo-umbrella"),
    DemoConnection("hooli-dc", "Hooli DC: offline for a few seconds", "demo-hooli"),
    DemoConnection("vandelay", "Vandelay: token expires mid-sync", "demo-expiring", False),
    DemoConnection("stark-works", "Stark Works: work orders forbidden", "demo-forbidden", False),
    DemoConnection("wayne", "Wayne Facilities: rate limited", "demo-throttled"),
)


def _say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def _fresh_store(url: str, secret_key: str, webhook_url: str) -> SqlStore:
    store = open_store(url)
    box = SecretBox(secret_key)
    for demo in DEMO_CONNECTIONS:
        store.add_connection(
            Connection(
                webhook_url=webhook_url,
                id=demo.id,
                name=demo.name,
                entity_types=("sites", "assets", "work-orders", "materials", "users"),
                token_ciphertext=box.encrypt(demo.token),
            )
        )
    return store


def _forget_coordination_state(client: redis.Redis) -> None:
    # A demo killed half-way leaves leases behind; this demo's ids are its own.
    for demo in DEMO_CONNECTIONS:
        keys = list(client.scan_iter(match=f"{{cb:{demo.id}}}*", count=500))
        if keys:
            client.delete(*keys)


def _start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "worker",
        "--pool=threads",
        "--concurrency=8",
        "-Q",
        "sync_manual,sync,backfill,notify,housekeeping",
        "--without-gossip",
        "--without-mingle",
        "--loglevel=INFO",
        "--hostname=demo@%h",
        # Embedded beat: resumes parked jobs and probes halted connections.
        "--beat",
        f"--schedule={DEMO_DIR / 'beat-schedule'}",
    ]
    with log_path.open("wb") as log:
        # The command is ours, built from constants and sys.executable.
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while b"ready." not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the demo worker did not start; its log ends:\n{tail}")
        time.sleep(0.2)
    return process


def _start_receiver(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[str], str]:
    """`entity-sync receiver` on a free loopback port; returns it and its URL."""
    command = [sys.executable, "-m", "worker.ops.cli", "receiver", "--port", "0"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command, env=env, stdout=subprocess.PIPE, stderr=log, text=True
        )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("RECEIVER LISTENING "):
        process.kill()
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the demo receiver did not start; its log ends:\n{tail}")
    return process, line.split()[-1]


def _stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def run_demo(settings: Settings) -> int:
    """Run the demo; returns the exit status (0 when every run succeeded)."""
    try:
        redis_client(settings.redis_url).ping()
    except redis.RedisError as exc:
        print(
            f"error: no Redis at {settings.redis_url} (ENTITY_SYNC_REDIS_URL): {exc}\n"
            "`make demo` starts one for you where redis-server is installed.",
            file=sys.stderr,
        )
        return 2
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    store_url = f"sqlite:///{DEMO_DIR}/entity-sync.db"
    secret_key = settings.secret_key.get_secret_value() if settings.secret_key else generate_key()
    webhook_secret = new_secret()
    _forget_coordination_state(redis_client(settings.redis_url))
    with running_sandbox(preset="demo") as sandbox:
        _say(f"sandbox serving the unified API at {sandbox.url}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITY_SYNC_")}
        env.update(
            ENTITY_SYNC_REDIS_URL=settings.redis_url,
            ENTITY_SYNC_BROKER_URL=settings.effective_broker_url,
            ENTITY_SYNC_STORE_URL=store_url,
            ENTITY_SYNC_UPSTREAM_URL=sandbox.url,
            ENTITY_SYNC_SECRET_KEY=secret_key,
            # The sandbox runs on this machine: allow more than a real API would.
            ENTITY_SYNC_RATE_PER_SECOND="100",
            ENTITY_SYNC_RATE_BURST="20",
        )
        receiver = DemoReceiver(webhook_secret, sandbox).start()
        upstream_secret = new_secret()
        env.update(
            ENTITY_SYNC_WEBHOOK_SECRET=webhook_secret,
            # The demo's receiver listens on this machine over plain http.
            ENTITY_SYNC_WEBHOOK_ALLOW_HTTP="true",
            ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE="true",
            ENTITY_SYNC_UPSTREAM_WEBHOOK_SECRET=upstream_secret,
        )
        store = _fresh_store(store_url, secret_key, receiver.url)
        _say(f"registered {len(DEMO_CONNECTIONS)} connections in {store_url}")
        upstream_receiver, upstream_url = _start_receiver(env, DEMO_DIR / "receiver.log")
        sandbox.set_webhooks(upstream_url, upstream_secret)
        _say(f"receiving the unified API's webhooks at {upstream_url}")
        worker = _start_worker(env, DEMO_DIR / "worker.log")
        _say(f"worker started (log: {DEMO_DIR / 'worker.log'})")
        try:
            status, summary = _sync_all(store, settings, worker)
            receiver.wait_for("connection.reauthorization_required", timeout_s=30)
            _revoke_by_webhook(sandbox, receiver)
            print()
            print(render_table(status_rows(store, Runtime(settings=settings).breaker)))
            print()
            for line in summary:
                _say(line)
            return status
        finally:
            receiver.stop()
            _stop(upstream_receiver)
            _stop(worker)
            _say(f"stopped; the demo store stays in {DEMO_DIR} until the next demo")


def _revoke_by_webhook(sandbox: SandboxHandle, receiver: DemoReceiver) -> None:
    """A customer's credentials change; the unified API says so before any call fails."""
    connection_id, token = REVOKED_BY_WEBHOOK
    sandbox.reset_stats()
    receiver.announced(connection_id)
    sandbox.revoke(token)
    _say(f"the unified API announces by webhook that {connection_id}'s credentials changed")
    if not receiver.wait_for(
        "connection.reauthorization_required", timeout_s=30, connection_id=connection_id
    ):
        _say(f"no re-authorisation event for {connection_id} within 30 s: see the logs")
        return
    by_path = sandbox.token_stats(token).get("by_path", {})
    calls = sum(n for path, n in by_path.items() if path.startswith("/api/eam/"))
    _say(f"{connection_id} halted by the webhook; data requests before it: {calls}")


def _sync_all(
    store: SqlStore, settings: Settings, worker: subprocess.Popen[bytes]
) -> tuple[int, list[str]]:
    client = EntitySyncClient(settings.effective_broker_url)
    started = time.monotonic()
    requests = {
        demo.id: client.sync_connection(demo.id, trigger="manual") for demo in DEMO_CONNECTIONS
    }
    _say(f"enqueued {len(requests)} syncs; waiting for every entity type")
    failed = 0
    records = 0
    for demo in DEMO_CONNECTIONS:
        entity_types = store.get_connection(demo.id).entity_types
        runs = wait_for_request(store, requests[demo.id], entity_types, timeout_s=SYNC_TIMEOUT_S)
        records += sum(run.records for run in runs)
        if demo.healthy:
            failed += sum(run.status != RunStatus.SUCCEEDED for run in runs)
    elapsed = time.monotonic() - started
    summary = [
        f"{records} records in {elapsed:.1f}s (enqueue to stored, one threads worker, "
        f"concurrency 8, broken connections included)",
        "vandelay is halted until re-authorised (a 401); initech too (the unified API's "
        "webhook); stark-works/work-orders is blocked; hooli-dc (offline) and wayne "
        "(rate limited) recovered by themselves",
    ]
    if failed:
        summary.append(f"{failed} run(s) of healthy connections did not succeed: see LAST ERROR")
    return (1 if failed else 0), summary
