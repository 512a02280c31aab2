"""Helpers shared by the tests: real services, waiting; worker processes and the
webhook receiver come from ``harness.testing`` (bench and chaos use them too)."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg
import redis

from harness.testing import processes
from harness.testing.processes import ROOT, WorkerProcess, wait_for
from harness.testing.receiver import WebhookReceiver
from worker.ops.status import wait_for_request
from worker.store import Run, SqlStore


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


class Env(processes.Env):
    """Settings for one test: the test run's Redis unless told otherwise."""

    def __init__(self, *, store_url: str, upstream_url: str, **extra: str) -> None:
        redis_url = extra.pop("ENTITY_SYNC_REDIS_URL", REDIS_URL)
        super().__init__(
            store_url=store_url, upstream_url=upstream_url, redis_url=redis_url, **extra
        )


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
            for w in processes.STARTED
            if w.alive()
        )
        raise AssertionError(f"{exc}\nruns:\n{runs}\n{logs}") from exc


__all__ = [
    "POSTGRES_URL",
    "REDIS_URL",
    "ROOT",
    "SCRIPTS_REDIS_URL",
    "Env",
    "FakeClock",
    "WebhookReceiver",
    "WorkerProcess",
    "postgres_schema",
    "require_redis",
    "wait_for",
    "wait_for_runs",
]
