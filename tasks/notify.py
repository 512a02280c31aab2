"""Webhook delivery: ``entity_sync.notify.deliver`` per connection, and the outbox sweep."""

from __future__ import annotations

from typing import Any

from worker.celeryapp.app import app, publish
from worker.celeryapp.task_base import outage_retry
from worker.errors import UnknownConnection
from worker.jobs import NOTIFY, NOTIFY_QUEUE, SWEEP_OUTBOX
from worker.logs import bound
from worker.outbox.notifier import deliver_pending, webhook_sender
from worker.runtime import runtime
from worker.timeutil import utc_now


@app.task(
    name=NOTIFY,
    queue=NOTIFY_QUEUE,
    **outage_retry(),
)
def deliver(connection_id: str) -> dict[str, Any]:
    """Deliver one connection's due events, in order."""
    rt = runtime(publish)
    with bound(connection_id=connection_id):
        try:
            report = deliver_pending(
                store=rt.store,
                cache=rt.redis,
                secrets=rt.secrets,
                settings=rt.settings,
                connection_id=connection_id,
                send=webhook_sender(rt.webhooks),
            )
        except UnknownConnection:
            return {"outcome": "unknown connection"}
    if report.more:  # the pass hit its time budget: the rest goes in a new task
        publish(NOTIFY, {"connection_id": connection_id}, NOTIFY_QUEUE)
    return {
        "delivered": report.delivered,
        "failed": report.failed,
        "dead": report.dead,
        "busy": report.busy,
        "lost": report.lost,
        "no_secret": report.no_secret,
        "more": report.more,
    }


@app.task(name=SWEEP_OUTBOX, ignore_result=True)
def sweep_outbox() -> int:
    """Enqueue delivery for every connection with a due event (the relay's safety net)."""
    rt = runtime(publish)
    connections = rt.store.connections_with_due_events(now=utc_now())
    for connection_id in connections:
        publish(NOTIFY, {"connection_id": connection_id}, NOTIFY_QUEUE)
    return len(connections)
