"""What every fault case shares: its own services, workers with fault hooks, the audit.

A case runs inside a ``Stack``: the sandbox (the simulated unified API), a
private ``redis-server`` that is both the coordination Redis and the Celery
broker, a store (SQLite, or a private PostgreSQL cluster) and workers started
through ``chaos.worker``. ``audit`` compares the store with the sandbox's
truth record by record.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.infra import PostgresCluster, RedisServer
from harness.testing.processes import Env, WorkerProcess
from harness.testing.sandbox import SandboxHandle, running_sandbox
from worker.client import EntitySyncClient
from worker.ops.status import wait_for_request
from worker.store import Run, RunStatus, SqlStore
from worker.timeutil import canonical_instant


@dataclass
class CaseResult:
    """One row of RELIABILITY.md's table."""

    fault: str
    injected: int = 0
    outcome: str = "not run"
    survived: bool = False
    records_checked: int = 0
    records_lost: int = 0  # in the upstream, missing from the store
    stale: int = 0  # stored, but older than (or different from) the upstream's version
    duplicates: int = 0  # duplicate rows, or an event delivered twice
    seconds: float = 0.0
    scale: str = ""  # what was injected, and how much (shortened or full)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Audit:
    """The store against the upstream's truth for some (connection, entity) pairs."""

    checked: int
    lost: int
    stale: int
    duplicate_rows: int
    extra: int  # stored keys the upstream never had

    @property
    def clean(self) -> bool:
        return not (self.lost or self.stale or self.duplicate_rows or self.extra)

    def __add__(self, other: Audit) -> Audit:
        return Audit(
            self.checked + other.checked,
            self.lost + other.lost,
            self.stale + other.stale,
            self.duplicate_rows + other.duplicate_rows,
            self.extra + other.extra,
        )


NO_AUDIT = Audit(0, 0, 0, 0, 0)


def audit(
    store: SqlStore, sandbox: SandboxHandle, connection_id: str, token: str, entity: str
) -> Audit:
    """Count lost, stale, duplicated and foreign records of one pair."""
    truth = {r["key"]: r for r in sandbox.truth(token, entity)}
    stored = {r.key: r for r in store.records(connection_id, entity)}
    lost = stale = 0
    for key, record in truth.items():
        copy = stored.get(key)
        if copy is None:
            lost += 1
        elif copy.updated_at != canonical_instant(record["updatedAt"]) or copy.data != record:
            stale += 1
    rows = store._read(  # noqa: SLF001 - the one check the store's API cannot express
        "SELECT COUNT(*) FROM (SELECT key FROM records WHERE connection_id = ? "
        "AND entity_type = ? GROUP BY key HAVING COUNT(*) > 1) AS dup",
        (connection_id, entity),
    )
    return Audit(len(truth), lost, stale, int(rows[0][0]), len(set(stored) - set(truth)))


class ChaosWorker(WorkerProcess):
    """``harness.testing.processes.WorkerProcess`` started by ``chaos.worker`` (fault hooks)."""

    def __init__(self, env: Env, log_path: Path, *, arm_dir: Path, **kwargs: Any) -> None:
        super().__init__(env, log_path, launcher="chaos.worker", name_prefix="chaos", **kwargs)
        self.arm_dir = arm_dir
        self.extra_env["CHAOS_ARM_DIR"] = str(arm_dir)

    def start(self, *, wait: bool = True, timeout: float = 90.0) -> ChaosWorker:
        super().start(wait=wait, timeout=timeout)
        return self

    def rss_bytes(self) -> int:
        """Resident memory of the worker and its pool children."""
        if not self.alive():
            return 0
        assert self.proc is not None
        pids = [self.proc.pid, *self.child_pids()]
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total


class Stack:
    """Sandbox, a private Redis (broker too), a store and hooked workers for one case."""

    def __init__(
        self,
        exits: ExitStack,
        workdir: Path,
        *,
        sandbox: SandboxHandle,
        postgres: bool,
        **settings: str,
    ) -> None:
        self.workdir = workdir
        self.sandbox = sandbox
        self.redis = exits.enter_context(RedisServer())
        self.postgres: PostgresCluster | None = None
        if postgres:
            self.postgres = exits.enter_context(PostgresCluster())
            store_url = self.postgres.url
        else:
            store_url = f"sqlite:///{workdir}/store.db"
        self.arm_dir = workdir / "arm"
        self.arm_dir.mkdir()
        self.env = Env(
            store_url=store_url,
            upstream_url=sandbox.url,
            redis_url=self.redis.url(),
            ENTITY_SYNC_BROKER_URL=self.redis.url(),
            **settings,
        )
        self.workers: list[ChaosWorker] = []
        self.deaths: list[str] = []  # why supervised workers died (their last log line)
        self._store: SqlStore | None = None
        exits.callback(self._stop_workers)

    @property
    def store(self) -> SqlStore:
        if self._store is None:
            self._store = self.env.store()
        return self._store

    def client(self) -> EntitySyncClient:
        return EntitySyncClient(self.redis.url())

    def worker(
        self,
        name: str,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        beat: bool = True,
        start: bool = True,
        **extra_env: str,
    ) -> ChaosWorker:
        worker = ChaosWorker(
            self.env,
            self.workdir / f"{name}.log",
            arm_dir=self.arm_dir,
            pool=pool,
            concurrency=concurrency,
            beat=beat,
        )
        worker.extra_env.update(extra_env)
        self.workers.append(worker)
        return worker.start() if start else worker

    def connection(
        self, connection_id: str, spec: dict[str, Any], entity_types: tuple[str, ...]
    ) -> str:
        """Register a sandbox connection and the matching entity-sync connection."""
        token = f"tok-{uuid.uuid4().hex[:12]}"
        self.sandbox.put_connection(token, spec)
        self.env.add_connection(connection_id, token, entity_types)
        return token

    def audit(self, connection_id: str, token: str, entity_types: tuple[str, ...]) -> Audit:
        total = NO_AUDIT
        for entity in entity_types:
            total = total + audit(self.store, self.sandbox, connection_id, token, entity)
        return total

    def sync(self, connection_id: str, *, full: bool = False, timeout: float = 180) -> list[Run]:
        """Request a sync and wait for every run of it to end."""
        entity_types = self.store.get_connection(connection_id).entity_types
        request_id = self.client().sync_connection(connection_id, full=full)
        return wait_for_request(self.store, request_id, entity_types, timeout_s=timeout)

    def supervise(self) -> ChaosWorker:
        """Restart the newest worker if it exited, as a process supervisor would.

        Returns the live worker. Each death is recorded with the worker's
        last critical log line.
        """
        worker = self.workers[-1]
        if worker.alive():
            return worker
        critical = [line for line in worker.log().splitlines() if '"CRITICAL"' in line]
        self.deaths.append(critical[-1][:400] if critical else "exited without a CRITICAL line")
        log(f"worker exited: {self.deaths[-1][:160]}; restarting it")
        return self.worker(
            f"{worker.log_path.stem}-r{len(self.deaths)}",
            pool=worker.pool,
            concurrency=worker.concurrency,
            beat=worker.beat,
            **worker.extra_env,
        )

    def wait_request(
        self, request_id: str, entities: tuple[str, ...], timeout: float
    ) -> list[Run] | None:
        """Wait for a request's runs, restarting a dead worker meanwhile; None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.supervise()
            try:
                return wait_for_request(self.store, request_id, entities, timeout_s=0, poll_s=0)
            except TimeoutError:
                time.sleep(0.5)
        return None

    def arm(self, point: str, scope: str) -> None:
        tmp = self.arm_dir / "arm.tmp"
        tmp.write_text(f"{point} {scope}\n")
        tmp.replace(self.arm_dir / "arm")

    def disarm(self) -> None:
        (self.arm_dir / "arm").unlink(missing_ok=True)

    def fired(self) -> list[str]:
        return sorted(p.read_text().strip() for p in self.arm_dir.glob("fired-*"))

    def _stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()


@contextmanager
def stack(
    *, sandbox: SandboxHandle | None = None, postgres: bool = False, **settings: str
) -> Iterator[Stack]:
    """A Stack in a temporary directory; everything it started is stopped afterwards."""
    with ExitStack() as exits:
        workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
        if not os.environ.get("CHAOS_KEEP"):  # CHAOS_KEEP=1 keeps worker logs and stores
            exits.callback(shutil.rmtree, workdir, True)
        if sandbox is None:
            sandbox = exits.enter_context(running_sandbox(preset="empty"))
        yield Stack(exits, workdir, sandbox=sandbox, postgres=postgres, **settings)


_T0 = time.monotonic()


def log(message: str) -> None:
    """Progress on stderr (the suite takes minutes)."""
    print(f"[chaos {time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def succeeded(runs: list[Run]) -> bool:
    return bool(runs) and all(r.status == RunStatus.SUCCEEDED for r in runs)


def timed(fn: Callable[[], CaseResult]) -> CaseResult:
    started = time.monotonic()
    result = fn()
    result.seconds = round(time.monotonic() - started, 1)
    return result


def default_settings(**overrides: str) -> dict[str, str]:
    """Settings every case uses: short leases and visibility so recovery fits a run."""
    return {
        "ENTITY_SYNC_LEASE_TTL": "5",
        "ENTITY_SYNC_STALLED_RUN_SECONDS": "8",
        "ENTITY_SYNC_VISIBILITY_TIMEOUT": "15",
        "ENTITY_SYNC_PAGES_PER_TASK": "3",
        **overrides,
    }


def machine() -> str:
    import platform

    cpus = os.cpu_count()
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb // 1024 // 1024} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{platform.node()}: {platform.system()} {platform.release()}, {cpus} cores{mem}, "
        f"Python {platform.python_version()}"
    )
