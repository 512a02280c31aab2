"""Ask the status endpoint before a run, through the guard, and cache a good answer.

A connection whose status says ``fail`` needs re-authorisation and halts
before a single list page is requested; ``error`` means the source system is
down, which counts against the connection's breaker. A healthy answer is
cached in Redis briefly, so a fan-out of eight entity types asks once.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from worker.coordination import redis_keys
from worker.coordination.scripts import coordination
from worker.resilience.classify import Where, error_for_sync_status
from worker.resilience.guard import Guard
from worker.upstream.client import UpstreamClient


def preflight(
    *,
    guard: Guard,
    client: UpstreamClient,
    cache: redis.Redis,
    connection_id: str,
    base_url: str,
    token: str,
    cache_seconds: float,
    learn: Callable[[object], None] | None = None,
) -> None:
    """Raise what the guard decides when the connection is not healthy.

    ``learn`` is given the status endpoint's ``id`` of the connection (the id
    the unified API's webhooks name it by), even when the status says ``fail``.
    """
    key = redis_keys.preflight(connection_id)
    with coordination(f"preflight of {connection_id}"):
        if cache.exists(key):
            return

    def ask() -> str:
        status = client.status(base_url, token)
        if learn is not None:
            learn(status.id)
        problem = error_for_sync_status(status.sync_status)
        if problem is not None:
            raise problem
        return status.sync_status

    sync_status = guard.call(None, Where.STATUS, ask)
    with coordination(f"preflight of {connection_id}"):
        cache.set(key, sync_status, px=max(1, int(cache_seconds * 1000)))


def forget_preflight(cache: redis.Redis, connection_id: str) -> None:
    """Drop the cached answer (after a new token, say)."""
    with coordination(f"preflight of {connection_id}"):
        cache.delete(redis_keys.preflight(connection_id))
