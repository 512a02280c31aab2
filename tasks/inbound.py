"""Webhooks the unified API sends: ``entity_sync.upstream_event`` and the sweep behind it.

The receiver keeps each event in the store before it answers, then enqueues
this task; the sweep enqueues any event still waiting (a publish lost with
the broker). Acting on an event twice changes nothing (worker/inbound/actions.py).
"""

from __future__ import annotations

from typing import Any

from worker.celeryapp.app import app, publish
from worker.celeryapp.task_base import outage_retry
from worker.inbound.actions import process_event, sweep
from worker.jobs import HOUSEKEEPING_QUEUE, SWEEP_UPSTREAM_EVENTS, UPSTREAM_EVENT
from worker.runtime import runtime


@app.task(
    name=UPSTREAM_EVENT,
    queue=HOUSEKEEPING_QUEUE,
    **outage_retry(),
)
def upstream_event(event_id: str) -> dict[str, Any]:
    """Act on one kept webhook of the unified API."""
    return {"outcome": process_event(runtime(publish), event_id, publish)}


@app.task(name=SWEEP_UPSTREAM_EVENTS, ignore_result=True, queue=HOUSEKEEPING_QUEUE)
def sweep_upstream_events() -> int:
    """Enqueue every kept upstream event that is still waiting."""
    return sweep(runtime(publish).store, publish)
