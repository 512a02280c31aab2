"""What every suite shares: services, real worker processes, sandboxes, measuring.

Benchmarks use a dedicated Redis database (10, broker and coordination; never
the tests' 13), fresh SQLite files under ``var/bench`` and fresh PostgreSQL
schemas that are dropped afterwards. Workers are real ``celery -A worker
worker`` subprocesses, started the way ``tests/support.py`` starts them.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis

from harness.testing.processes import (
    QUEUES,
    celery_beat_command,
    celery_worker_command,
    spawn,
    stop_group,
)
from worker.client import EntitySyncClient
from worker.secrets import SecretBox, generate_key
from worker.store import Connection, SqlStore, open_store

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "var" / "bench"
REDIS_BASE = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DB = 10
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
DATA_END = "2026-11-01T00:00:00Z"


def redis_url(db: int = REDIS_DB, base: str = REDIS_BASE) -> str:
    return f"{base}/{db}"


def flush_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    client.flushdb()
    client.close()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def parse_instant(text: str) -> float:
    """The store's canonical UTC text as unix seconds."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


# -- stores ----------------------------------------------------------------------------


@dataclass
class StoreSpec:
    """A fresh store: its URL and how to measure and drop it."""

    kind: str  # "sqlite" or "postgresql"
    url: str
    path: Path | None = None
    schema: str | None = None

    def size_bytes(self) -> int:
        """The records table (with its indexes) on disk; SQLite: the whole file set."""
        if self.path is not None:
            return sum(
                p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file()
            )
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            row = conn.execute(f"SELECT pg_total_relation_size('{self.schema}.records')").fetchone()
        return int(row[0]) if row else 0

    def checkpoint(self) -> None:
        """Fold SQLite's WAL into the file so its size means something."""
        if self.path is not None:
            import sqlite3

            with sqlite3.connect(self.path) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@contextmanager
def fresh_store(kind: str, name: str) -> Iterator[StoreSpec]:
    if kind == "sqlite":
        directory = OUT_DIR / "stores"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}-{uuid.uuid4().hex[:6]}.db"
        try:
            yield StoreSpec("sqlite", f"sqlite:///{path}", path=path)
        finally:
            for p in directory.glob(path.name + "*"):
                p.unlink(missing_ok=True)
        return
    schema = f"es_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield StoreSpec(
                "postgresql",
                f"{POSTGRES_URL}?options=-csearch_path%3D{schema}",
                schema=schema,
            )
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


# -- the worker's environment ------------------------------------------------------------


@dataclass
class BenchEnv:
    """Settings shared by the harness and its worker processes."""

    store_url: str
    upstream_url: str
    redis: str = field(default_factory=redis_url)
    broker: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    secret_key: str = field(default_factory=generate_key)

    @property
    def vars(self) -> dict[str, str]:
        values = {
            "ENTITY_SYNC_REDIS_URL": self.redis,
            "ENTITY_SYNC_STORE_URL": self.store_url,
            "ENTITY_SYNC_UPSTREAM_URL": self.upstream_url,
            "ENTITY_SYNC_SECRET_KEY": self.secret_key,
            "ENTITY_SYNC_LOG_LEVEL": "INFO",
            # The default 10 req/s per connection is a production guard; the
            # sandbox is local and a benchmark measures the worker, not the guard.
            "ENTITY_SYNC_RATE_PER_SECOND": "10000",
            "ENTITY_SYNC_RATE_BURST": "1000",
            "ENTITY_SYNC_SCHEDULE_ENABLED": "false",
        }
        if self.broker:
            values["ENTITY_SYNC_BROKER_URL"] = self.broker
        values.update(self.extra)
        return values

    def process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITY_SYNC_")}
        env.update(self.vars)
        env["PYTHONPATH"] = str(ROOT)
        return env

    @property
    def broker_url(self) -> str:
        return self.broker or self.redis

    def store(self) -> SqlStore:
        return open_store(self.store_url)

    def add_connections(
        self, store: SqlStore, specs: Sequence[tuple[str, str, Sequence[str]]]
    ) -> None:
        """Register (connection id, sandbox token, entity types)."""
        box = SecretBox(self.secret_key)
        for connection_id, token, entity_types in specs:
            store.add_connection(
                Connection(
                    id=connection_id,
                    name=connection_id,
                    entity_types=tuple(entity_types),
                    token_ciphertext=box.encrypt(token),
                )
            )


# -- worker processes ----------------------------------------------------------------------


class Proc:
    """A subprocess whose whole tree we can measure (CPU, peak RSS) and stop."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: bytes | None = b"ready.", timeout: float = 90.0) -> Proc:
        self.proc = spawn(self.command, env=self.env, log_path=self.log_path, append=False)
        _RUNNING.add(self)
        if ready is not None:
            deadline = time.monotonic() + timeout
            while ready not in self.log_path.read_bytes():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = self.log_path.read_text(errors="replace")[-3000:]
                    self.stop()
                    raise RuntimeError(f"{self.command[:6]} did not start:\n{tail}")
                time.sleep(0.1)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tree(self) -> list[psutil.Process]:
        try:
            main = psutil.Process(self.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """user + system CPU of the process tree so far (children that ended included)."""
        total = 0.0
        for p in self.tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
        return total

    def peak_rss_mb(self) -> tuple[float, float]:
        """(main process VmHWM, largest VmHWM in the tree) in MB."""
        peaks = []
        for p in self.tree():
            try:
                with open(f"/proc/{p.pid}/status") as status:
                    for line in status:
                        if line.startswith("VmHWM:"):
                            peaks.append(int(line.split()[1]) / 1024)
            except OSError:
                pass
        return (peaks[0] if peaks else 0.0, max(peaks) if peaks else 0.0)

    def stop(self, timeout: float = 30.0) -> None:
        stop_group(self.proc, timeout=timeout)
        _RUNNING.discard(self)


# Every Proc started and not stopped yet: the bench stops them all when it ends, however
# it ends (a worker runs in a session of its own and would outlive it, consuming the
# queues of the next bench run).
_RUNNING: set[Proc] = set()


def stop_every_process() -> None:
    """Stop every process this bench started that is still running."""
    for proc in list(_RUNNING):
        proc.stop(timeout=10)


def _beat_file() -> Path:
    directory = OUT_DIR / "beat"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"schedule-{uuid.uuid4().hex[:6]}"


def celery_command(
    app: str,
    *,
    pool: str,
    concurrency: int,
    queues: str = QUEUES,
    beat: bool = True,
    schedule: Path | None = None,
    prefix: Sequence[str] = (),
) -> list[str]:
    """``celery -A app worker ...`` (optionally behind a wrapper module in ``prefix``)."""
    return celery_worker_command(
        pool=pool,
        concurrency=concurrency,
        hostname=f"bench-{uuid.uuid4().hex[:6]}",
        queues=queues,
        beat_schedule=(schedule or _beat_file()) if beat else None,
        launcher=(*prefix, "--") if prefix else ("celery",),
        app=app,
    )


def start_worker(
    env: BenchEnv,
    name: str,
    *,
    pool: str = "threads",
    concurrency: int = 16,
    beat: bool = True,
    prefix: Sequence[str] = (),
) -> Proc:
    command = celery_command("worker", pool=pool, concurrency=concurrency, beat=beat, prefix=prefix)
    return Proc(command, env.process_env(), OUT_DIR / "logs" / f"{name}.log").start()


def start_beat(env: BenchEnv, name: str) -> Proc:
    """A standalone ``celery -A worker beat`` (for pools that cannot embed one)."""
    command = celery_beat_command(_beat_file())
    return Proc(command, env.process_env(), OUT_DIR / "logs" / f"{name}-beat.log").start(
        ready=b"beat: Starting"
    )


# -- running syncs ---------------------------------------------------------------------------


@dataclass
class SyncOutcome:
    """One timed sync of many connections."""

    seconds: float  # enqueue to the last run finished
    records: int  # records stored
    runs: int
    failed: int
    cpu_s: float  # worker tree CPU during the sync
    pages: int = 0
    longest_run_pages: int = 0
    peak_rss_mb: float = 0.0


def enqueue_all(env: BenchEnv, connection_ids: Sequence[str]) -> tuple[float, list[str]]:
    client = EntitySyncClient(env.broker_url)
    started = time.time()
    requests = [client.sync_connection(cid, trigger="manual") for cid in connection_ids]
    return started, requests


def wait_runs(
    store: SqlStore,
    request_ids: Sequence[str],
    expected_runs: int,
    *,
    timeout_s: float,
    poll_s: float = 0.2,
) -> list[Any]:
    """Wait until ``expected_runs`` runs of these requests are terminal; return them."""
    deadline = time.monotonic() + timeout_s
    terminal = {"succeeded", "failed", "rejected"}
    while True:
        runs = [run for rid in request_ids for run in store.runs_for_request(rid)]
        done = [run for run in runs if str(run.status) in terminal]
        if len(done) >= expected_runs:
            return done
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(done)}/{expected_runs} runs finished in {timeout_s:g}s")
        time.sleep(poll_s)


def count_records(store: SqlStore) -> int:
    return int(store._read("SELECT COUNT(*) FROM records")[0][0])  # noqa: SLF001


def timed_sync(
    env: BenchEnv,
    store: SqlStore,
    worker: Proc,
    connection_ids: Sequence[str],
    expected_runs: int,
    *,
    timeout_s: float = 1200.0,
) -> SyncOutcome:
    """Enqueue a sync of every connection; time it from enqueue to the last run's end."""
    cpu0 = worker.cpu_seconds()
    started, requests = enqueue_all(env, connection_ids)
    runs = wait_runs(store, requests, expected_runs, timeout_s=timeout_s)
    cpu = worker.cpu_seconds() - cpu0
    finished = max(parse_instant(run.finished_at) for run in runs if run.finished_at)
    return SyncOutcome(
        seconds=finished - started,
        records=count_records(store),
        runs=len(runs),
        failed=sum(str(run.status) != "succeeded" for run in runs),
        cpu_s=cpu,
        pages=sum(run.pages for run in runs),
        longest_run_pages=max((run.pages for run in runs), default=0),
    )


def clean_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


Clock = Callable[[], float]
