"""One run with a known token through every path: the token appears nowhere.

Paths: broker messages (what Flower shows as task arguments), worker logs at
DEBUG, the run history and every other table, the status and events output,
the dashboard's JSON and metrics, and the error messages of a failed run.
Sentry events are checked in test_sentry.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.testing.sandbox import running_sandbox
from tests.support import ROOT, Env, WebhookReceiver, WorkerProcess, wait_for, wait_for_runs
from worker.client import EntitySyncClient

pytestmark = pytest.mark.integration

TOKEN = f"leak-canary-{uuid.uuid4().hex}"
SECRET = "whsec_leak_test_secret_value"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_token_appears_nowhere(
    tmp_path: Path, test_redis: Any, worker_factory: list[WorkerProcess]
) -> None:
    with running_sandbox(preset="empty") as sandbox:
        sandbox.put_connection(
            TOKEN,
            {"seed": 3, "sizes": {"assets": 400, "sites": 30},
             "scenarios": [{"name": "auth_fail_from_page", "page": 4}]},
        )  # fmt: skip
        receiver = WebhookReceiver(SECRET).start()
        env = Env(
            store_url=f"sqlite:///{tmp_path}/store.db",
            upstream_url=sandbox.url,
            ENTITY_SYNC_LOG_LEVEL="DEBUG",
            ENTITY_SYNC_WEBHOOK_SECRET=SECRET,
            ENTITY_SYNC_WEBHOOK_ALLOW_HTTP="true",
            ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE="true",
        )
        added = env.cli(
            "connections", "add", "canary", "--entity", "assets", "--entity", "sites",
            "--token-stdin", stdin=TOKEN + "\n",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        env.store().set_webhook("canary", url=receiver.url, secret_ciphertext=None)

        # Sample everything Redis holds while the run goes: queued messages,
        # unacknowledged ones, breaker state.
        seen_in_redis: list[bytes] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                for key in test_redis.keys("*"):
                    kind = test_redis.type(key)
                    if kind == b"list":
                        seen_in_redis.extend(test_redis.lrange(key, 0, -1))
                    elif kind == b"hash":
                        seen_in_redis.extend(test_redis.hgetall(key).values())
                    elif kind == b"string":
                        seen_in_redis.append(test_redis.get(key) or b"")
                    elif kind == b"zset":
                        seen_in_redis.extend(test_redis.zrange(key, 0, -1))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            worker = WorkerProcess(env, tmp_path / "worker.log").start()
            worker_factory.append(worker)
            client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
            runs = wait_for_runs(
                env.store(), client.sync_connection("canary"), ["assets", "sites"], timeout_s=60
            )
            assert any(r.error_kind == "auth" for r in runs), "the run must fail on the 401"
            wait_for(lambda: receiver.received, 30, "the webhook", worker)
        finally:
            stop.set()
            sampler.join()
            receiver.stop()

        port = _free_port()
        dashboard = subprocess.Popen(
            [sys.executable, "-m", "worker.ops.cli", "dashboard", "--port", str(port)],
            env=env.process_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: _answers(base), 20, "the dashboard")
            pages = [httpx.get(base + path).text for path in ("/", "/api/status", "/metrics")]
        finally:
            dashboard.terminate()
            dashboard.wait(10)

        outputs = [
            env.cli(*command).stdout + env.cli(*command).stderr
            for command in (
                ("status",), ("status", "--json"), ("connections", "list", "--json"),
                ("connections", "show", "canary"), ("events", "--json"),
                ("breaker", "show", "canary"),
            )
        ]  # fmt: skip
        database = (tmp_path / "store.db").read_bytes()
        wal = tmp_path / "store.db-wal"
        database += wal.read_bytes() if wal.exists() else b""
        debug_log = worker.log()

    assert "DEBUG" in debug_log, "the worker must have logged at debug level"
    assert seen_in_redis, "the sampler must have seen the broker's messages"
    assert any(b"canary" in value for value in seen_in_redis), "task arguments were sampled"
    canary = TOKEN.encode()
    assert not [v for v in seen_in_redis if canary in v], "token in Redis (broker or state)"
    assert TOKEN not in debug_log, "token in the worker's logs"
    assert canary not in database, "token in the store (it must be encrypted at rest)"
    for text in outputs + pages:
        assert TOKEN not in text
    assert SECRET not in debug_log and SECRET.encode() not in database


def _answers(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
