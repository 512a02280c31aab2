"""A real Celery worker that raises where a test says (``python -m tests.fault_worker``).

Test-only, like ``chaos/worker.py``: the product has no switch to break itself,
so this module wraps functions at the steps of a run before starting the
ordinary worker. ``FAULT_WORKER_FAULTS`` is a JSON object mapping a connection
id to a step; every time a task of that connection reaches the step, it raises
``OverflowError`` (an exception nobody classifies, as a record's odd
timestamp really raised). The message carries ``FAULT_WORKER_SECRET`` after
``Bearer``, to prove that what reaches the run history and the log is redacted.

Steps: ``start`` (before the run's lease is taken, outside the step: the
task itself must end the run), ``refusal`` (the database refuses the page's
data, as PostgreSQL refuses a NUL character: a StoreError that is no outage),
``fetch`` (the HTTP request), ``parse`` (page
to records), ``record_check`` (one record), ``commit`` (the page's
transaction), ``cursor`` (the pager moving the cursor), ``breaker``
(admission), ``event`` (recording a transition with its outbox event; give
that connection a token the upstream refuses).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from harness.testing.hooked_worker import run_celery

STEPS = (
    "start",
    "refusal",
    "fetch",
    "parse",
    "record_check",
    "commit",
    "cursor",
    "breaker",
    "event",
)


def _faults() -> dict[str, str]:
    faults = json.loads(os.environ.get("FAULT_WORKER_FAULTS") or "{}")
    unknown = set(faults.values()) - set(STEPS)
    if unknown:
        raise SystemExit(f"FAULT_WORKER_FAULTS names unknown steps: {sorted(unknown)}")
    return {str(k): str(v) for k, v in faults.items()}


def _raise_if_armed(step: str, faults: dict[str, str]) -> None:
    from worker.logs import context

    connection_id = context().get("connection_id")
    if faults.get(str(connection_id)) != step:
        return
    secret = os.environ.get("FAULT_WORKER_SECRET", "")
    message = f"injected at {step} (Authorization: Bearer {secret})"
    if step == "refusal":
        import psycopg

        from worker.errors import StoreError

        raise StoreError(f"store: {message}") from psycopg.DataError(message)
    raise OverflowError(message)


def _wrap(owner: Any, name: str, step: str, faults: dict[str, str]) -> None:
    original: Callable[..., Any] = getattr(owner, name)  # AttributeError: the step moved

    def hooked(*args: Any, **kwargs: Any) -> Any:
        _raise_if_armed(step, faults)
        return original(*args, **kwargs)

    setattr(owner, name, hooked)


def install() -> None:
    """Wrap one function per step (only calls of an armed connection raise)."""
    import worker.outbox.transitions
    import worker.resilience.breaker
    import worker.sync.pager
    import worker.sync.records
    import worker.sync.runner
    import worker.sync.slice
    import worker.upstream.client
    from worker.store import runs

    faults = _faults()
    _wrap(worker.sync.runner, "connection_for", "start", faults)
    _wrap(worker.upstream.client.UpstreamClient, "_get", "fetch", faults)
    _wrap(worker.sync.slice, "split_records", "parse", faults)
    _wrap(worker.sync.records, "check_record", "record_check", faults)
    _wrap(runs.SyncStore, "commit_page", "commit", faults)
    _wrap(runs.SyncStore, "commit_page", "refusal", faults)
    _wrap(worker.sync.pager.Pager, "advance", "cursor", faults)
    _wrap(worker.resilience.breaker.Breaker, "admit", "breaker", faults)
    _wrap(worker.outbox.transitions.TransitionRecorder, "__call__", "event", faults)


def main() -> None:
    run_celery(install)


if __name__ == "__main__":
    main()
