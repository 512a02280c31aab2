"""`entity-sync demo`: the whole product on one machine, end to end.

Starts the sandbox (preset ``demo``) and a real Celery worker, registers the
demo connections in a fresh SQLite store under ``var/demo``, syncs them all,
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

import redis

from worker.client import EntitySyncClient
from worker.demo_receiver import DemoReceiver
from worker.runtime import Runtime, redis_client
from worker.sandbox.testing import running_sandbox
from worker.secrets import SecretBox, generate_key
from worker.settings import Settings
from worker.status import render_table, status_rows, wait_for_request
from worker.store import Connection, RunStatus, SqlStore, open_store
from worker.webhooks import new_secret

DEMO_DIR = Path("var/demo")
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
    DemoConnection("initech", "Initech Facilities (Fiix)", "demo-initech"),
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


def run_demo(settings: Settings) -> int:
    """Run the demo; returns the exit status (0 when every run succeeded)."""
    try:
        redis_client(settings).ping()
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
    _forget_coordination_state(redis_client(settings))
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
        env.update(
            ENTITY_SYNC_WEBHOOK_SECRET=webhook_secret,
            # The demo's receiver listens on this machine over plain http.
            ENTITY_SYNC_WEBHOOK_ALLOW_HTTP="true",
            ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE="true",
        )
        store = _fresh_store(store_url, secret_key, receiver.url)
        _say(f"registered {len(DEMO_CONNECTIONS)} connections in {store_url}")
        worker = _start_worker(env, DEMO_DIR / "worker.log")
        _say(f"worker started (log: {DEMO_DIR / 'worker.log'})")
        try:
            status = _sync_all(store, settings, worker)
            receiver.wait_for("connection.reauthorization_required", timeout_s=30)
            return status
        finally:
            receiver.stop()
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
            _say(f"stopped; the demo store stays in {DEMO_DIR} until the next demo")


def _sync_all(store: SqlStore, settings: Settings, worker: subprocess.Popen[bytes]) -> int:
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
    print()
    print(render_table(status_rows(store, Runtime(settings=settings).breaker)))
    print()
    _say(
        f"{records} records in {elapsed:.1f}s (enqueue to stored, one threads worker, "
        f"concurrency 8, broken connections included)"
    )
    _say(
        "vandelay is halted until re-authorised; stark-works/work-orders is blocked; "
        "hooli-dc (offline) and wayne (rate limited) recovered by themselves"
    )
    if failed:
        _say(f"{failed} run(s) of healthy connections did not succeed: see LAST ERROR")
    return 1 if failed else 0
