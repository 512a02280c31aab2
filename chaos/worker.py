"""A real Celery worker with fault hooks: ``python -m chaos.worker -A worker worker ...``.

The product has no switch to crash itself, so the fault suite starts the
ordinary worker through this module, which adds hooks at the points a crash
matters and fires each one only when the suite *arms* it:

- ``CHAOS_ARM_DIR``: the suite writes ``<dir>/arm`` holding ``POINT SCOPE``.
  The first process that reaches POINT renames the file (so one kill per arm),
  records ``fired-<pid>`` and SIGKILLs itself (SCOPE ``child``) or its whole
  process group, i.e. the worker with its pool and embedded beat (``worker``).
  POINTs: ``before_commit`` (a page fetched, its transaction not begun),
  ``during_commit`` (records and cursor written, COMMIT not sent),
  ``after_commit`` (committed, the slice not yet concluded), ``before_ack``
  (the task returned and sent its continuation, not yet acknowledged).
- ``CHAOS_POISON_CONNECTION``: every ``entity_sync.sync_entity`` job of this
  connection SIGKILLs the process running it, after the task counted the
  delivery: a job that crashes its worker every time.

One setting differs from production: kombu scans for unacknowledged messages
of dead workers every second instead of every ~100 s (its default interval
10 s times throttle 10). The suite also shortens the visibility timeout; with
the production values (1 h) a whole-worker crash delays its task by about an
hour, which RELIABILITY.md states.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from harness.testing.hooked_worker import run_celery

_IN_COMMIT = threading.local()


def fire(point: str) -> None:
    """SIGKILL this process (or its group) if ``point`` is armed."""
    arm_dir = os.environ.get("CHAOS_ARM_DIR")
    if not arm_dir:
        return
    arm = Path(arm_dir) / "arm"
    try:
        wanted, scope = arm.read_text().split()
    except (FileNotFoundError, ValueError):
        return
    if wanted != point:
        return
    fired = Path(arm_dir) / f"fired-{os.getpid()}-{time.time_ns()}"
    try:
        os.rename(arm, fired)  # atomic: exactly one process takes an arm
    except FileNotFoundError:
        return
    fired.write_text(f"{point} {scope} {time.time()} {_task_id()}\n")
    if scope == "worker":
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _task_id() -> str:
    from celery import current_task

    request = getattr(current_task, "request", None)
    return f"{getattr(request, 'id', None)}:{getattr(request, 'retries', 0)}"


def install() -> None:
    """Wrap the store's page commit, the task's end and (optionally) its body."""
    from celery import signals

    from worker.celeryapp.app import app
    from worker.store import base, runs
    from worker.sync import runner

    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }

    commit_page = runs.SyncStore.commit_page

    def hooked_commit_page(self: Any, commit: Any) -> None:
        fire("before_commit")
        _IN_COMMIT.active = True
        try:
            commit_page(self, commit)
        finally:
            _IN_COMMIT.active = False
        fire("after_commit")

    runs.SyncStore.commit_page = hooked_commit_page  # type: ignore[method-assign]

    execute = base.Tx.execute

    def hooked_execute(self: Any, statement: str, params: Any = ()) -> Any:
        if getattr(_IN_COMMIT, "active", False) and statement.startswith("UPDATE runs SET pages"):
            fire("during_commit")  # records and cursor are written, not committed
        return execute(self, statement, params)

    base.Tx.execute = hooked_execute  # type: ignore[method-assign]

    @signals.task_postrun.connect(weak=False)
    def _before_ack(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "name", "") == "entity_sync.sync_entity":
            fire("before_ack")

    poison = os.environ.get("CHAOS_POISON_CONNECTION")
    if poison:
        # The step counts the delivery as it starts (with the lease and slot),
        # so the crash comes just after: in the step that holds them.
        held_step = runner._held_step

        def poisoned_held_step(rt: Any, job: Any, *args: Any) -> Any:
            if job.connection_id == poison:
                os.kill(os.getpid(), signal.SIGKILL)
            return held_step(rt, job, *args)

        runner._held_step = poisoned_held_step  # type: ignore[assignment]


def main() -> None:
    run_celery(install)


if __name__ == "__main__":
    main()
