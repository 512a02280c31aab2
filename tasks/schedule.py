"""Housekeeping tasks that celery beat runs: resume parked jobs, probe what is halted."""

from __future__ import annotations

from typing import Any

from worker.app import app
from worker.jobs import HOUSEKEEPING_QUEUE, SYNC_QUEUE
from worker.recovery import probe, resume_parked
from worker.runtime import runtime

RESUME_PARKED = "entity_sync.housekeeping.resume_parked"
PROBE = "entity_sync.housekeeping.probe"


def _send(name: str, payload: dict[str, Any]) -> object:
    return app.send_task(name, kwargs=payload, queue=SYNC_QUEUE)


@app.task(name=RESUME_PARKED, ignore_result=True, queue=HOUSEKEEPING_QUEUE)
def resume_parked_jobs() -> int:
    """Send the parked sync jobs that are due."""
    return resume_parked(runtime(), _send)


@app.task(name=PROBE, ignore_result=True, queue=HOUSEKEEPING_QUEUE)
def probe_connections() -> dict[str, int]:
    """Re-probe halted connections and blocked entity types that are due."""
    return probe(runtime(), _send)
