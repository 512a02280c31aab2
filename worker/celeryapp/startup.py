"""Checks a worker runs before it takes its first job.

A wrong setting, a store it cannot open or a Redis it cannot reach stops the
worker at start-up with a message that says which, instead of failing every
job one by one later.
"""

from __future__ import annotations

import redis

from worker.coordination.client import redis_client
from worker.errors import ConfigError, CoordinationError
from worker.secrets import SecretBox
from worker.settings import Settings
from worker.store import open_store


def check_ready(settings: Settings) -> None:
    """Raise ConfigError, StoreError or CoordinationError if the worker cannot work."""
    SecretBox.from_settings(settings)
    open_store(settings.store_url).drop_connection()
    try:
        redis_client(settings.redis_url).ping()
    except redis.RedisError as exc:
        raise CoordinationError(
            f"ENTITY_SYNC_REDIS_URL: cannot reach Redis ({exc}); is redis-server running?"
        ) from exc


__all__ = ["ConfigError", "check_ready"]
