"""Real worker and beat processes for tests, benchmarks and the fault suite.

One way to start ``celery -A worker worker`` (or a wrapper module of it, such
as ``chaos.worker``) with its own settings and log file, wait until it is
ready, and stop or kill its whole process group: ``tests/support.py``,
``bench/common.py`` and ``chaos/harness.py`` all build on it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from worker.jobs import ALL_QUEUES
from worker.secrets import SecretBox, generate_key
from worker.settings import Settings
from worker.store import Connection, SqlStore, open_store

ROOT = Path(__file__).resolve().parents[2]  # the checkout: worker processes run from it
QUEUES = ",".join(ALL_QUEUES)


def process_env(variables: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without its ENTITY_SYNC_ settings, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITY_SYNC_")}
    env.update(variables)
    env["PYTHONPATH"] = str(ROOT)
    return env


def celery_worker_command(
    *,
    pool: str,
    concurrency: int,
    hostname: str,
    queues: str = QUEUES,
    beat_schedule: Path | None = None,
    launcher: Sequence[str] = ("celery",),
    app: str = "worker",
) -> list[str]:
    """``python -m celery -A worker worker ...``; ``launcher`` may name a wrapper module
    (with its own arguments, e.g. ``("bench.instrumented_worker", "--")``)."""
    command = [
        sys.executable, "-m", *launcher, "-A", app, "worker",
        f"--pool={pool}", f"--concurrency={concurrency}",
        "-Q", queues, "--without-gossip", "--without-mingle",
        "--loglevel=INFO", f"--hostname={hostname}@%h",
    ]  # fmt: skip
    if beat_schedule is not None:
        command += ["--beat", f"--schedule={beat_schedule}"]
    return command


def celery_beat_command(schedule: Path) -> list[str]:
    """A standalone ``python -m celery -A worker beat``."""
    return [
        sys.executable, "-m", "celery", "-A", "worker", "beat", "--loglevel=INFO",
        f"--schedule={schedule}",
    ]  # fmt: skip


def spawn(
    command: Sequence[str], *, env: Mapping[str, str], log_path: Path, append: bool = True
) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session (so its whole tree can be signalled)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab" if append else "wb") as log:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            list(command),
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )


def stop_group(proc: subprocess.Popen[bytes] | None, *, timeout: float = 20.0) -> None:
    """SIGTERM the process group, SIGKILL it if it has not ended within ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
    except ProcessLookupError:
        pass


def kill_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL the process group (main process and every child)."""
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        proc.wait(10)


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


class Env:
    """Settings for one test or case, shared by its process and its worker processes."""

    def __init__(self, *, store_url: str, upstream_url: str, redis_url: str, **extra: str) -> None:
        self.vars = {
            "ENTITY_SYNC_REDIS_URL": redis_url,
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
        return Settings(**fields)  # type: ignore[arg-type]

    def process_env(self) -> dict[str, str]:
        return process_env(self.vars)

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
        return subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "worker.ops.cli", *args],
            env=self.process_env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


STARTED: list[WorkerProcess] = []  # for failure reports: whose log to show


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
        name_prefix: str = "test",
    ) -> None:
        self.env = env
        self.launcher = launcher  # a module run as ``-m``: celery, or a wrapper of it
        self.log_path = log_path
        self.pool = pool
        self.concurrency = concurrency
        self.beat = beat  # embedded celery beat: resumes parked jobs, probes
        self.queues = QUEUES
        self.name = f"{name_prefix}-{uuid.uuid4().hex[:6]}"
        self.extra_env: dict[str, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready_mark = 0

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> WorkerProcess:
        self._ready_mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = celery_worker_command(
            pool=self.pool,
            concurrency=self.concurrency,
            hostname=self.name,
            queues=self.queues,
            beat_schedule=self.log_path.with_suffix(".beat-schedule") if self.beat else None,
            launcher=(self.launcher,),
        )
        self.proc = spawn(
            command, env={**self.env.process_env(), **self.extra_env}, log_path=self.log_path
        )
        if wait:
            wait_for(self.ready, timeout, "worker ready", self)
        STARTED.append(self)
        return self

    def ready(self) -> bool:
        """Whether this start of the worker logged ``ready.`` (earlier starts do not count)."""
        with self.log_path.open("rb") as f:
            f.seek(self._ready_mark)
            return b"ready." in f.read()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def child_pids(self) -> list[int]:
        """Every child process of the worker: the pool, and the embedded beat if any."""
        assert self.proc is not None
        out = subprocess.run(  # noqa: S603
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
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
        kill_group(self.proc)

    def stop(self) -> None:
        stop_group(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
