"""The base class of the sync tasks: an outage of our own infrastructure is logged
before the task publishes its retry.

Celery logs a retry only after the retry message is published, and publishing
is exactly what hangs or fails while Redis is down (it is the broker too). So
the warning that says which dependency is down comes first, and an operator
sees the outage in the log within seconds.

And a sync task that ends by an exception anyway (raised before its run's
lease was taken, or after its step) ends its run: ``on_failure`` closes it
``failed`` so that no run stays ``running`` for want of a task.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from worker.celeryapp.app import publish
from worker.errors import CoordinationError, StoreError
from worker.jobs import SYNC_ENTITY, payload_of
from worker.logs import log
from worker.runtime import runtime
from worker.sync.task_failures import end_crashed_task, is_outage

_WHAT_IS_DOWN = {CoordinationError: "Redis unreachable", StoreError: "store unreachable"}


def outage_retry(**options: Any) -> dict[str, Any]:
    """The retry policy of every task, as ``@app.task`` options (``options`` add to it).

    Outages of our own infrastructure (the store, Redis) are worth retrying,
    with capped, jittered backoff; anything else is the task's own outcome.
    """
    return {
        "autoretry_for": (StoreError, CoordinationError),
        "retry_backoff": 2,
        "retry_backoff_max": 60,
        "retry_jitter": True,
        "max_retries": 20,
        **options,
    }


class SyncTask(Task):  # type: ignore[misc]
    """A Celery task that names the outage it retries for."""

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        exc = kwargs.get("exc")
        for error_type, what in _WHAT_IS_DOWN.items():
            if isinstance(exc, error_type):
                log.warning(
                    "%s: %s; task %s retries in %s s (attempt %d)",
                    what,
                    exc,
                    self.name,
                    kwargs.get("countdown", "?"),
                    int(self.request.retries) + 1,
                    extra={"task_id": self.request.id},
                )
                break
        return super().retry(*args, **kwargs)

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        if self.name != SYNC_ENTITY:
            return
        if is_outage(exc):
            return  # the run waits for housekeeping to send it again (worker/sync/recovery.py)
        try:
            fields = payload_of(tuple(args or ()), dict(kwargs or {}))
            end_crashed_task(runtime(publish), fields, str(task_id), exc, report=False)
        except Exception:
            log.warning("could not end the run of crashed task %s", task_id, exc_info=True)
