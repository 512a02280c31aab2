"""Helpers shared by the tests: real services, a real worker process, waiting."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import redis

from worker.ops.status import wait_for_request
from worker.secrets import SecretBox, generate_key
from worker.settings import Settings
from worker.store import Connection, Run, SqlStore, open_store


def _private_redis_url() -> str:
    """A ``redis-server`` of this test run's own on a free port, stopped when the run ends.

    Why: two test runs on one machine (a developer's and a helper's, or CI's)
    that flush the same Redis database break each other's breakers and queues.
    The URL goes into the environment, so worker subprocesses and nested
    test helpers reuse this server instead of starting their own. Without the
    binary, the machine's shared Redis (database 13) is the fallback.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        return "redis://127.0.0.1:6379/13"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--protected-mode", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    atexit.register(server.terminate)
    url = f"redis://127.0.0.1:{port}/13"
    deadline = time.monotonic() + 15
    while True:
        try:
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(
                    f"the test run's own redis-server did not start on {port}"
                ) from None
            time.sleep(0.05)
    os.environ["ENTITY_SYNC_TEST_REDIS_URL"] = url
    return url


REDIS_URL = os.environ.get("ENTITY_SYNC_TEST_REDIS_URL") or _private_redis_url()
POSTGRES_URL = os.environ.get(
    "ENTITY_SYNC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ROOT = Path(__file__).resolve().parent.parent
# DB 15 on the test Redis: the breaker and limit tests flush it, and only it.
SCRIPTS_REDIS_URL = REDIS_URL.rsplit("/", 1)[0] + "/15"


class FakeClock:
    """A clock for the scripts' ``now_override``: starts at a round number, moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def require_redis() -> redis.Redis:
    """The test Redis, flushed; fails (never skips) when it does not answer."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RuntimeError(
            f"these tests need Redis at {REDIS_URL} (ENTITY_SYNC_TEST_REDIS_URL): {exc}"
        ) from exc
    return client


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A store URL on a fresh PostgreSQL schema, dropped afterwards."""
    schema = f"es_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        raise RuntimeError(
            f"these tests need PostgreSQL at {POSTGRES_URL} (ENTITY_SYNC_TEST_POSTGRES_URL): {exc}"
        ) from exc
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        separator = "&" if "?" in POSTGRES_URL else "?"
        try:
            yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


class Env:
    """Settings for one test, shared by the test process and its worker processes."""

    def __init__(self, *, store_url: str, upstream_url: str, **extra: str) -> None:
        self.vars = {
            "ENTITY_SYNC_REDIS_URL": REDIS_URL,
            "ENTITY_SYNC_STORE_URL": store_url,
            "ENTITY_SYNC_UPSTREAM_URL": upstream_url,
            "ENTITY_SYNC_SECRET_KEY": generate_key(),
            "ENTITY_SYNC_LOG_LEVEL": "INFO",
            # The sandbox is local and unlimited; tests of the limiter set their own.
            "ENTITY_SYNC_RATE_PER_SECOND": "1000",
            "ENTITY_SYNC_RATE_BURST": "100",
            # Scheduled syncs would mix into tests of requested ones; the
            # scheduler's own tests turn it on.
            "ENTITY_SYNC_SCHEDULE_ENABLED": "false",
            **extra,
        }

    def settings(self) -> Settings:
        fields = {
            name.removeprefix("ENTITY_SYNC_").lower(): value for name, value in self.vars.items()
        }
        return Settings(**fields)

    def process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITY_SYNC_")}
        env.update(self.vars)
        env["PYTHONPATH"] = str(ROOT)
        return env

    def store(self) -> SqlStore:
        return open_store(self.vars["ENTITY_SYNC_STORE_URL"])

    def add_connection(
        self,
        connection_id: str,
        token: str,
        entity_types: tuple[str, ...] = ("assets",),
        webhook_url: str | None = None,
    ) -> Connection:
        box = SecretBox(self.vars["ENTITY_SYNC_SECRET_KEY"])
        connection = Connection(
            id=connection_id,
            name=connection_id,
            entity_types=entity_types,
            token_ciphertext=box.encrypt(token),
            webhook_url=webhook_url,
        )
        self.store().add_connection(connection)
        return connection

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.ops.cli", *args],
            env=self.process_env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


class WorkerProcess:
    """A real Celery worker in a subprocess, with its log in a file."""

    def __init__(
        self,
        env: Env,
        log_path: Path,
        *,
        pool: str = "threads",
        concurrency: int = 4,
        beat: bool = True,
        launcher: str = "celery",
    ) -> None:
        self.env = env
        self.launcher = launcher  # a module run as ``-m``: celery, or a wrapper of it
        self.log_path = log_path
        self.pool = pool
        self.concurrency = concurrency
        self.beat = beat  # embedded celery beat: resumes parked jobs, probes
        self.queues = "sync_manual,sync,backfill,notify,housekeeping"
        self.name = f"test-{uuid.uuid4().hex[:6]}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        command = [
            sys.executable, "-m", self.launcher, "-A", "worker", "worker",
            f"--pool={self.pool}", f"--concurrency={self.concurrency}",
            "-Q", self.queues, "--without-gossip", "--without-mingle",
            "--loglevel=INFO", f"--hostname={self.name}@%h",
        ]  # fmt: skip
        if self.beat:
            schedule = self.log_path.with_suffix(".beat-schedule")
            command += ["--beat", f"--schedule={schedule}"]
        self.proc = subprocess.Popen(
            command,
            env=self.env.process_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        wait_for(lambda: b"ready." in self.log_path.read_bytes(), 60, "worker ready", self)
        _STARTED.append(self)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def child_pids(self) -> list[int]:
        """Every child process of the worker: the pool, and the embedded beat if any."""
        assert self.proc is not None
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in out.split()]

    def pool_pids(self) -> list[int]:
        """The prefork pool's child processes, as the worker itself reports them.

        Asked over Celery's remote control rather than read from ``ps``: the
        embedded beat is a child process too, and killing it would stop the
        periodic recovery a kill test relies on.
        """
        from celery import Celery

        node = f"{self.name}@{socket.gethostname()}"  # what ``%h`` expands to
        probe = Celery(broker=self.env.vars["ENTITY_SYNC_REDIS_URL"])
        try:
            replies = probe.control.inspect([node], timeout=10, limit=1).stats() or {}
        finally:
            probe.close()
        assert node in replies, f"worker {node} did not answer the stats request"
        return [int(pid) for pid in replies[node]["pool"]["processes"]]

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


_STARTED: list[WorkerProcess] = []  # for failure reports: whose log to show


def wait_for_runs(
    store: SqlStore, request_id: str, entity_types: Sequence[str], *, timeout_s: float
) -> list[Run]:
    """``wait_for_request``, failing with the request's runs and the live workers' logs."""
    try:
        return wait_for_request(store, request_id, entity_types, timeout_s=timeout_s)
    except TimeoutError as exc:
        runs = "\n".join(
            f"  run {r.id} {r.entity_type} {r.status} pages={r.pages} tasks={r.tasks}"
            f" coalesced_into={r.coalesced_into} error={r.error_message}"
            for r in store.runs_for_request(request_id)
        )
        logs = "\n".join(
            f"--- {w.log_path.name} (last 4000 chars)\n{w.log()[-4000:]}"
            for w in _STARTED
            if w.alive()
        )
        raise AssertionError(f"{exc}\nruns:\n{runs}\n{logs}") from exc


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, worker: WorkerProcess | None = None
) -> Any:
    """Poll ``condition`` until it is truthy; fail with ``what`` (and the worker log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    tail = worker.log()[-4000:] if worker else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


class WebhookReceiver:
    """A local webhook endpoint that checks signatures on its own and records events.

    The check is written here from the documented scheme (HMAC-SHA256 over
    ``"<t>." + body``), independently of ``worker.outbox.webhooks``. ``failing`` makes
    it answer 503 while true; ``start()`` may come late, to model a receiver
    that is down (connections refused) for a while.
    """

    def __init__(self, secret: str, port: int | None = None) -> None:
        import socket

        self.secret = secret
        if port is None:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hooks/entity-sync"
        self.received: list[dict[str, Any]] = []  # accepted, in arrival order
        self.attempts = 0
        self.bad_signatures = 0
        self.failing = False
        self._server: Any = None

    def start(self) -> WebhookReceiver:
        import hashlib
        import hmac
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.attempts += 1
                header = self.headers.get("X-EntitySync-Signature", "")
                parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
                expected = hmac.new(
                    receiver.secret.encode(), f"{parts.get('t')}.".encode() + body, hashlib.sha256
                ).hexdigest()
                fresh = abs(time.time() - int(parts.get("t", "0"))) < 300
                if not (fresh and hmac.compare_digest(expected, parts.get("v1", ""))):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                elif receiver.failing:
                    self.send_response(503)
                else:
                    event = json.loads(body)
                    event["_arrived"] = time.time()
                    event["_header_id"] = self.headers.get("X-EntitySync-Event-Id")
                    receiver.received.append(event)
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e["type"] == event_type]
