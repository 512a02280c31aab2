"""The per-process resources a task needs: settings, store, Redis, HTTP client.

Built lazily on first use and again after a fork, so a Celery prefork child
never shares its parent's sockets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

import redis

from worker.lease import Leases
from worker.secrets import SecretBox
from worker.settings import Settings, get_settings
from worker.store import SqlStore, open_store
from worker.upstream import UpstreamClient


def redis_client(settings: Settings) -> redis.Redis:
    """A Redis client with explicit timeouts, so an outage fails fast."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=3.0,
        socket_timeout=5.0,
        health_check_interval=30,
    )


@dataclass
class Runtime:
    """Lazily opened resources of one worker process."""

    settings: Settings

    @cached_property
    def store(self) -> SqlStore:
        return open_store(self.settings.store_url)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis_client(self.settings)

    @cached_property
    def upstream(self) -> UpstreamClient:
        return UpstreamClient(settings=self.settings)

    @cached_property
    def secrets(self) -> SecretBox:
        return SecretBox.from_settings(self.settings)

    @cached_property
    def leases(self) -> Leases:
        return Leases(self.redis, ttl_s=self.settings.lease_ttl)


_runtime: Runtime | None = None
_runtime_pid: int | None = None


def runtime() -> Runtime:
    """This process's Runtime (a new one after a fork)."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        _runtime = Runtime(settings=get_settings())
        _runtime_pid = os.getpid()
    return _runtime
