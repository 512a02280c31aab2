"""Per-connection rate and concurrency overrides: kept in the store, applied in Redis.

The store holds the durable copy (principle 1); Redis holds the copy the
admission script reads. ``apply_limits`` copies one to the other, and the
housekeeping probe re-applies every connection's, so a flushed Redis forgets
them for one probe interval at most.
"""

from __future__ import annotations

from collections.abc import Iterable

from worker.limits import Limits
from worker.store import Connection


def apply_limits(limits: Limits, connections: Iterable[Connection]) -> int:
    """Write each connection's overrides to Redis; returns how many were written."""
    written = 0
    for connection in connections:
        limits.set_connection_limits(
            connection.id,
            rate_per_s=connection.rate_per_second,
            burst=connection.rate_burst,
            max_concurrency=connection.max_concurrency,
        )
        written += 1
    return written
