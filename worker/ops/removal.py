"""Removing a connection: its rows in the store and its state in Redis.

Redis is cleared before the store is touched, so a Redis that does not answer
stops the removal with nothing changed (run it again later), and once more
afterwards, for what a task still running wrote in between. Every key of a
connection shares its hash tag (``worker.coordination.redis_keys``), so one SCAN finds
breakers, pauses, limits, leases, slots, retry budgets and the rest, including
kinds of keys added later. Without this, a connection added again under the
same id would inherit the old one's halt, limits or held leases.
"""

from __future__ import annotations

import redis

from worker.coordination import redis_keys
from worker.coordination.scripts import coordination
from worker.logs import connection_log
from worker.store import SqlStore


def forget_redis_state(client: redis.Redis, connection_id: str) -> int:
    """Delete every Redis key of a connection; returns how many were deleted."""
    deleted = 0
    with coordination(f"forget state of {connection_id}"):
        batch: list[bytes] = []
        for key in client.scan_iter(match=redis_keys.connection_pattern(connection_id), count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch = []
        if batch:
            deleted += int(client.delete(*batch))
    return deleted


def remove_connection(store: SqlStore, client: redis.Redis, connection_id: str) -> dict[str, int]:
    """Remove a connection everywhere; rows deleted per table, and Redis keys."""
    store.get_connection(connection_id)  # UnknownConnection before anything changes
    keys = forget_redis_state(client, connection_id)
    deleted = store.remove_connection(connection_id)
    keys += forget_redis_state(client, connection_id)
    deleted["redis_keys"] = keys
    connection_log.warning(
        "connection removed: %s",
        ", ".join(f"{n} {what}" for what, n in deleted.items()),
        extra={"connection_id": connection_id},
    )
    return deleted
