"""Send an outbox event on its way right after its commit (best effort).

If the broker is down at that moment nothing is lost: the event is in the
store, and the periodic sweep (``tasks.notify``) enqueues its delivery later.
The caller passes its way to publish: a worker its app's, the CLI its client's.
"""

from __future__ import annotations

from worker.jobs import NOTIFY, NOTIFY_QUEUE, Publish
from worker.logs import log


def relay(publish: Publish, connection_id: str) -> None:
    """Enqueue delivery of a connection's pending events."""
    try:
        publish(NOTIFY, {"connection_id": connection_id}, NOTIFY_QUEUE)
    except Exception as exc:  # kombu raises many unrelated types when the broker is away
        log.warning(
            "event relay failed, the sweep will deliver: %s",
            exc,
            extra={"connection_id": connection_id},
        )
