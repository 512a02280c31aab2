"""One worker process per core: ``entity-sync workers --processes N``.

A ``--pool=threads`` worker runs Python on one core at a time (the GIL), so a
machine with N cores runs N worker processes. This supervisor starts them as
``celery -A worker worker -n w<i>@%h`` children (distinct node names, so
Flower and ``celery inspect`` tell them apart), restarts a child that dies,
and on SIGTERM or SIGINT asks every child for Celery's warm shutdown (SIGTERM:
finish the running tasks, take no new ones) and exits when they have ended.
A second signal asks for a cold shutdown (SIGQUIT: running tasks are
abandoned; acks late puts them back in the queue, docs/operating.md "Crash safety").

Why a supervisor of our own rather than ``celery multi``: ``multi`` starts
daemons and returns, so nothing restarts a dead child and a service manager
(systemd, a container runtime) cannot watch the processes or hand them its
stop signal. This process stays in the foreground, is the one process such a
manager supervises, and forwards its signals. In containers the same shape is
one worker per container, scaled with ``deploy.replicas`` (docker-compose.yml).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from worker.jobs import ALL_QUEUES

log = logging.getLogger("entity_sync.workers")

# What `make worker` and docs/operating.md recommend for one process (BENCHMARKS.md,
# latency-bound pools): the work is I/O bound, so threads, 16 slots.
DEFAULT_WORKER_ARGS = (
    "--pool=threads",
    "--concurrency=16",
    "--loglevel=INFO",
    "-Q",
    ",".join(ALL_QUEUES),
    # Gossip makes every worker consume every other worker's events and mingle
    # asks all of them at start: broker traffic that grows with the square of
    # the processes, for features entity-sync does not use (docs/scaling.md).
    "--without-gossip",
    "--without-mingle",
)

RESTART_DELAY_S = 1.0  # first restart of a child that died
RESTART_DELAY_CAP_S = 30.0  # a child that keeps dying is restarted this often at most
STABLE_AFTER_S = 60.0  # a child that ran this long starts again from the first delay
POLL_S = 0.2


def default_processes() -> int:
    """One per core this process may run on (a container's CPU set, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def celery_worker_argv(node: str, extra: Sequence[str] = ()) -> list[str]:
    """``python -m celery -A worker worker -n NODE`` with the defaults, then ``extra``.

    ``extra`` comes last, so a repeated option (``--concurrency=32``) wins.
    """
    return [
        sys.executable, "-m", "celery", "-A", "worker", "worker",
        "-n", node, *DEFAULT_WORKER_ARGS, *extra,
    ]  # fmt: skip


def _end_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the supervisor dies (Linux).

    A supervisor killed with SIGKILL (the OOM killer) cannot forward anything;
    without this its workers would run on unsupervised, and a supervisor
    started again would run a second set under the same node names.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the service manager's own stop covers it


@dataclass
class Child:
    """One supervised worker: its node name, its process, and when to restart it."""

    index: int
    node: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    delay_s: float = RESTART_DELAY_S
    restart_at: float | None = None  # set while it waits to be started again


@dataclass
class Supervisor:
    """Starts ``processes`` children from ``command(node)`` and keeps them running.

    ``command`` builds a child's argv from its node name (``w<i>@%h``; Celery
    expands ``%h`` to the host name). Tests pass a stand-in command.
    """

    processes: int
    command: Callable[[str], list[str]]
    prefix: str = "w"
    env: dict[str, str] | None = None
    children: list[Child] = field(default_factory=list)
    stopping: int = 0  # stop requests handled: 1 warm shutdown asked, 2 cold
    clock: Callable[[], float] = time.monotonic
    # Signals received and not handled yet: the handler only notes them, the
    # loop acts (logging inside a signal handler can deadlock on its lock).
    pending: list[int] = field(default_factory=list)

    def run(self) -> int:
        """Start, supervise, and return once every child ended after a stop signal.

        Exit status 0 when every child ended with 0 on the way out, else 1.
        """
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.children = [Child(i, f"{self.prefix}{i}@%h") for i in range(1, self.processes + 1)]
        for child in self.children:
            self._start(child)
        return self.supervise()

    def supervise(self) -> int:
        codes: dict[int, int] = {}
        while True:
            while self.pending:
                self.stop(self.pending.pop(0))
            now = self.clock()
            for child in self.children:
                code = child.proc.poll() if child.proc is not None else None
                if self.stopping:
                    if child.proc is None or code is not None:
                        codes.setdefault(child.index, code or 0)
                    continue
                if child.proc is not None and code is not None:
                    self._schedule_restart(child, code, now)
                elif child.restart_at is not None and now >= child.restart_at:
                    self._start(child)
            if self.stopping and len(codes) == len(self.children):
                failed = {i: c for i, c in codes.items() if c != 0}
                log.info("workers: every worker process has ended (%s)", failed or "all 0")
                return 1 if failed else 0
            time.sleep(POLL_S)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask every running child to shut down; the first call warm, the next cold."""
        self.stopping += 1
        forward = signal.SIGTERM if self.stopping == 1 else signal.SIGQUIT
        how = "warm" if forward == signal.SIGTERM else "cold"
        log.info(
            "workers: %s received, %s shutdown of %d worker process(es)",
            signal.Signals(signum).name,
            how,
            sum(c.proc is not None and c.proc.poll() is None for c in self.children),
        )
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(forward)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.pending.append(signum)

    def _start(self, child: Child) -> None:
        # Each child in a process group of its own: a Ctrl-C on the terminal
        # reaches the supervisor alone, which forwards one signal per child
        # (Celery takes a second SIGINT as a cold shutdown).
        child.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and celery
            self.command(child.node),
            env=self.env,
            process_group=0,
            preexec_fn=_end_with_parent,  # noqa: PLW1509 - one thread here
        )
        child.started_at = self.clock()
        child.restart_at = None
        log.info("workers: started %s (pid %d)", child.node, child.proc.pid)

    def _schedule_restart(self, child: Child, code: int, now: float) -> None:
        if now - child.started_at >= STABLE_AFTER_S:
            child.delay_s = RESTART_DELAY_S
        child.restart_at = now + child.delay_s
        child.restarts += 1
        log.warning(
            "workers: %s (pid %d) exited with %d; restart %d in %.0f s",
            child.node,
            child.proc.pid if child.proc else -1,
            code,
            child.restarts,
            child.delay_s,
        )
        child.proc = None
        # A child that dies at once (a wrong setting) is not restarted in a
        # tight loop: the delay doubles up to the cap.
        child.delay_s = min(child.delay_s * 2, RESTART_DELAY_CAP_S)
