"""The one lock of the worker: a Redis key held by one holder for a while.

``Lock`` serves every lock and lease: a run's pair lease (``Leases``), the
notifier's per-connection delivery lease, the one active scheduler, a
housekeeping step's period and a halted connection's probe interval. Every
one has a TTL, so a crashed holder blocks for one TTL at most; taking,
handing over and releasing are atomic scripts (``lua/lease_*.lua``).

A pair lease (connection, entity type) keeps two runs of one pair from
overlapping. Its holder is ``<run id>/<task id>``: a Celery task id stays the
same when the broker redelivers a message, so a redelivered task takes its
own lease back. A run that continues in a new task hands the lease over to
the new task's id before sending it, so the old message, if it is ever
redelivered, finds the lease taken and stands down. The lease is renewed
before each page.
"""

from __future__ import annotations

from typing import Any

import redis

from worker.coordination.redis_keys import lease as lease_key
from worker.coordination.scripts import LuaScript, ScriptCall, coordination, lua_source, text
from worker.errors import CoordinationError

_PACKAGE = "worker.coordination"  # where lua/ is


def holder_of(run_id: str, task_id: str) -> str:
    """The lease holder string of one task of one run."""
    return f"{run_id}/{task_id}"


def parse_holder(holder: str) -> tuple[str, str]:
    """The (run id, task id) a lease holder string names."""
    run_id, _, task_id = holder.partition("/")
    return run_id, task_id


class LeaseLost(CoordinationError):
    """Our lease expired and another task holds the pair now."""


class Lock:
    """Locks on Redis keys that expire ``ttl_s`` after they were taken or renewed.

    Every Redis error becomes ``CoordinationError``.
    """

    def __init__(self, client: redis.Redis, *, ttl_s: float) -> None:
        self._client = client
        self._ttl_ms = max(1, int(ttl_s * 1000))
        acquire = lua_source(_PACKAGE, "lease_acquire")
        release = lua_source(_PACKAGE, "lease_release")
        self._acquire: Any = client.register_script(acquire)
        self._handover: Any = client.register_script(lua_source(_PACKAGE, "lease_handover"))
        self._release: Any = client.register_script(release)
        # The same scripts for ``*_call``, sent in a pipeline with others
        # (``scripts.in_one_round_trip``), whole the first time. The direct
        # calls keep redis-py's registered scripts, which a client stand-in
        # can provide (tests/unit/outbox/test_notifier.py).
        self._acquire_lua = LuaScript(client, acquire)
        self._release_lua = LuaScript(client, release)

    def acquire(self, key: str, holder: str) -> str:
        """Take (or renew) the lock; returns who holds it now (us if it equals holder)."""
        with coordination(f"lock {key}"):
            return text(self._acquire(keys=[key], args=[holder, self._ttl_ms]))

    def acquire_call(self, key: str, holder: str) -> ScriptCall:
        """``acquire`` as a call to send with others (``scripts.in_one_round_trip``)."""
        return ScriptCall(self._acquire_lua, [key], [holder, self._ttl_ms])

    def release_call(self, key: str, holder: str) -> ScriptCall:
        """``release`` as a call to send with others."""
        return ScriptCall(self._release_lua, [key], [holder])

    def take(self, key: str, holder: str) -> bool:
        """Take or renew the lock; False while somebody else holds it."""
        return self.acquire(key, holder) == holder

    def claim(self, key: str) -> bool:
        """Take the key for one TTL if it is free, never renewing it: a period claimed once."""
        with coordination(f"claim {key}"):
            return bool(self._client.set(key, "1", nx=True, px=self._ttl_ms))

    def hand_over(self, key: str, holder: str, successor: str) -> bool:
        """Pass our lock to ``successor``; False if it was not ours."""
        with coordination(f"lock {key}"):
            return bool(self._handover(keys=[key], args=[holder, successor, self._ttl_ms]))

    def holder(self, key: str) -> str | None:
        """Who holds the lock now (None: nobody)."""
        with coordination(f"lock {key}"):
            current: Any = self._client.get(key)
        return None if current is None else text(current)

    def release(self, key: str, holder: str) -> bool:
        """Let go of our lock (compare-and-delete); False if it was not ours."""
        with coordination(f"lock {key}"):
            return bool(self._release(keys=[key], args=[holder]))


class Leases:
    """Acquire, renew, hand over and release pair leases in Redis."""

    def __init__(self, client: redis.Redis, *, ttl_s: float) -> None:
        self._lock = Lock(client, ttl_s=ttl_s)

    def acquire(self, connection_id: str, entity_type: str, holder: str) -> str:
        """Take (or renew) the lease; returns who holds it now (us if it equals holder)."""
        return self._lock.acquire(lease_key(connection_id, entity_type), holder)

    def acquire_call(self, connection_id: str, entity_type: str, holder: str) -> ScriptCall:
        """``acquire`` as a call to send with others; its reply is the holder now."""
        return self._lock.acquire_call(lease_key(connection_id, entity_type), holder)

    def renew(self, connection_id: str, entity_type: str, holder: str) -> None:
        """Extend our lease; LeaseLost when another task took it meanwhile."""
        current = self.acquire(connection_id, entity_type, holder)
        if current != holder:
            raise LeaseLost(f"lease of {connection_id}/{entity_type} now held by task {current}")

    def hand_over(self, connection_id: str, entity_type: str, holder: str, successor: str) -> None:
        """Pass our lease to the task that continues the run; LeaseLost if not ours."""
        if not self._lock.hand_over(lease_key(connection_id, entity_type), holder, successor):
            raise LeaseLost(f"lease of {connection_id}/{entity_type} is no longer ours")

    def holder(self, connection_id: str, entity_type: str) -> str | None:
        """Who holds the pair's lease now (None: nobody)."""
        return self._lock.holder(lease_key(connection_id, entity_type))

    def release_call(self, connection_id: str, entity_type: str, holder: str) -> ScriptCall:
        """``release`` as a call to send with others (no-op if the lease is not ours)."""
        return self._lock.release_call(lease_key(connection_id, entity_type), holder)

    def release(self, connection_id: str, entity_type: str, holder: str) -> None:
        """Let go of our lease (no-op if it is not ours any more)."""
        self._lock.release(lease_key(connection_id, entity_type), holder)
