"""Periodic work that celery beat sends: one tick running schedules, parked jobs,
stalled runs, probes, the outbox sweep and the sweep of kept upstream webhooks,
each at its own cadence.

One beat task enqueues what is due from the store (``worker.sync.schedule``)
rather than one beat entry per connection: the registry stays the only list
of connections, a new connection needs no beat restart, and a slot is claimed
in SQL so it is sent at most once whoever sends it. A Redis lock keeps one
scheduler active; the SQL claim makes a second one harmless anyway.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

from tasks.inbound import sweep_upstream_events
from tasks.notify import sweep_outbox
from worker.celeryapp.app import app, publish
from worker.celeryapp.task_base import outage_retry
from worker.coordination import redis_keys
from worker.coordination.lease import Lock
from worker.jobs import (
    HOUSEKEEPING_QUEUE,
    HOUSEKEEPING_TICK,
    PROBE,
    PRUNE_HISTORY,
    RESEND_STALLED,
    RESUME_PARKED,
    RESUME_PARKED_JOB,
    SCHEDULE,
    SYNC_CONNECTION,
    SYNC_QUEUE,
)
from worker.runtime import runtime
from worker.store import Connection
from worker.sync.housekeeping import Step, tick
from worker.sync.reconciliation import reconciliation_due
from worker.sync.recovery import probe, resend_stalled_runs, resume_parked, resume_parked_job
from worker.sync.retention import prune_history
from worker.sync.schedule import schedule_due

LOCK_TTL_S = 10.0
_OWNER = f"{socket.gethostname()}:{os.getpid()}"


def _holds_scheduler_lock() -> bool:
    """Take or keep the scheduler lock; False while another scheduler holds it."""
    return Lock(runtime(publish).redis, ttl_s=LOCK_TTL_S).take(redis_keys.SCHEDULER_LOCK, _OWNER)


@app.task(name=SCHEDULE, ignore_result=True, queue=HOUSEKEEPING_QUEUE)
def schedule_syncs() -> int:
    """Enqueue a scheduled sync for every connection whose slot has come."""
    rt = runtime(publish)
    if not rt.settings.schedule_enabled or not _holds_scheduler_lock():
        return 0

    intervals: dict[str, int | None] = {}

    def enqueue(connection: Connection) -> None:
        payload: dict[str, Any] = {"connection_id": connection.id, "trigger": "scheduled"}
        if not intervals:
            intervals.update(rt.store.reconcile_intervals())
        if reconciliation_due(
            rt.store,
            connection,
            own_interval_s=intervals.get(connection.id),
            default_interval_s=rt.settings.reconcile_interval_seconds,
            now=datetime.now(UTC),
            confirm_after_s=rt.settings.deletion_confirm_after_seconds,
        ):
            payload["full"] = True  # a complete read: it finds what the source deleted
        publish(SYNC_CONNECTION, payload, SYNC_QUEUE)

    decisions = schedule_due(
        rt.store,
        rt.store.list_connections(),
        default_interval_s=rt.settings.sync_interval_seconds,
        now=time.time(),
        enqueue=enqueue,
    )
    return sum(d.outcome == "enqueued" for d in decisions)


@app.task(name=RESUME_PARKED, ignore_result=True, queue=HOUSEKEEPING_QUEUE)
def resume_parked_jobs() -> int:
    """Send the parked sync jobs that are due."""
    return resume_parked(runtime(publish).store, publish)


def _backlog(queue: str) -> int:
    """Messages waiting in a broker queue (a queue the broker does not have holds none)."""
    with app.connection_for_read() as connection:
        try:
            declared = connection.default_channel.queue_declare(queue=queue, passive=True)
        except connection.channel_errors:
            return 0
        return int(declared.message_count)


@app.task(name=RESEND_STALLED, ignore_result=True, queue=HOUSEKEEPING_QUEUE)
def resend_stalled() -> int:
    """Send again the runs whose next task the broker lost."""
    rt = runtime(publish)
    return resend_stalled_runs(
        publish,
        _backlog,
        store=rt.store,
        leases=rt.leases,
        stalled_run_seconds=rt.settings.stalled_run_seconds,
    )


@app.task(name=PROBE, ignore_result=True, queue=HOUSEKEEPING_QUEUE)
def probe_connections() -> dict[str, int]:
    """Re-probe halted connections and blocked entity types that are due."""
    return probe(runtime(publish), publish)


@app.task(name=PRUNE_HISTORY, ignore_result=True, queue=HOUSEKEEPING_QUEUE)
def prune_old_history() -> int:
    """Fold finished runs into the counters and delete history past its retention."""
    return prune_history(runtime(publish).store, runtime(publish).settings).total


@app.task(
    name=RESUME_PARKED_JOB,
    ignore_result=True,
    **outage_retry(),
)
def resume_parked_job_task(connection_id: str, entity_type: str, run_id: str, due_at: str) -> bool:
    """Resume one job this worker parked for a short while (no beat needed)."""
    rt = runtime(publish)
    return resume_parked_job(
        publish,
        store=rt.store,
        client=rt.redis,
        connection_id=connection_id,
        entity_type=entity_type,
        run_id=run_id,
        due_at=due_at,
    )


# Everything housekeeping does, each at its cadence (seconds; 0: every tick).
STEPS = (
    Step("schedule-syncs", 0, schedule_syncs),
    Step("resume-parked-jobs", 0, resume_parked_jobs),
    Step("sweep-outbox", 5.0, sweep_outbox),
    Step("sweep-upstream-events", 5.0, sweep_upstream_events),
    Step("resend-stalled-runs", 10.0, resend_stalled),
    Step("probe-halted-and-blocked", 30.0, probe_connections),
    Step("prune-history", 60.0, prune_old_history),
)


@app.task(name=HOUSEKEEPING_TICK, ignore_result=True, queue=HOUSEKEEPING_QUEUE)
def housekeeping_tick() -> dict[str, Any]:
    """Do all housekeeping that is due (beat sends this every few seconds)."""
    return tick(runtime(publish).redis, STEPS)
