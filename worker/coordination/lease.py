"""A lease per (connection, entity type): two runs of one pair never overlap.

The holder is a Celery task id, which stays the same when the broker
redelivers a message, so a redelivered task takes its own lease back. A run
that continues in a new task hands the lease over to the new task's id before
sending it, so the old message, if it is ever redelivered, finds the lease
taken and stands down. Every lease has a TTL, renewed before each page: a
crashed holder blocks its pair for one TTL at most.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis

from worker.coordination.redis_keys import lease as lease_key
from worker.errors import CoordinationError
from worker.resilience.limits import coordination

T = TypeVar("T")


# KEYS[1] lease; ARGV[1] holder, ARGV[2] ttl ms. Returns the holder after the call.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return current
"""

# KEYS[1] lease; ARGV[1] expected holder, ARGV[2] new holder, ARGV[3] ttl ms.
_HANDOVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

# KEYS[1] lease; ARGV[1] holder. Compare-and-delete.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def holder_of(run_id: str, task_id: str) -> str:
    """The lease holder string of one task of one run."""
    return f"{run_id}/{task_id}"


def parse_holder(holder: str) -> tuple[str, str]:
    """The (run id, task id) a lease holder string names."""
    run_id, _, task_id = holder.partition("/")
    return run_id, task_id


class LeaseLost(CoordinationError):
    """Our lease expired and another task holds the pair now."""


def _guarded(call: Callable[[], T]) -> T:
    with coordination("lease"):
        return call()


class Leases:
    """Acquire, renew, hand over and release pair leases in Redis."""

    def __init__(self, client: redis.Redis, *, ttl_s: float) -> None:
        self._client = client
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._acquire: Any = client.register_script(_ACQUIRE)
        self._handover: Any = client.register_script(_HANDOVER)
        self._release: Any = client.register_script(_RELEASE)

    def acquire(self, connection_id: str, entity_type: str, holder: str) -> str:
        """Take (or renew) the lease; returns who holds it now (us if it equals holder)."""
        key = lease_key(connection_id, entity_type)
        current = _guarded(lambda: self._acquire(keys=[key], args=[holder, self._ttl_ms]))
        return current.decode() if isinstance(current, bytes) else str(current)

    def renew(self, connection_id: str, entity_type: str, holder: str) -> None:
        """Extend our lease; LeaseLost when another task took it meanwhile."""
        current = self.acquire(connection_id, entity_type, holder)
        if current != holder:
            raise LeaseLost(f"lease of {connection_id}/{entity_type} now held by task {current}")

    def hand_over(self, connection_id: str, entity_type: str, holder: str, successor: str) -> None:
        """Pass our lease to the task that continues the run; LeaseLost if not ours."""
        key = lease_key(connection_id, entity_type)
        moved = _guarded(lambda: self._handover(keys=[key], args=[holder, successor, self._ttl_ms]))
        if not moved:
            raise LeaseLost(f"lease of {connection_id}/{entity_type} is no longer ours")

    def holder(self, connection_id: str, entity_type: str) -> str | None:
        """Who holds the pair's lease now (None: nobody)."""
        key = lease_key(connection_id, entity_type)
        current: Any = _guarded(lambda: self._client.get(key))
        return current.decode() if isinstance(current, bytes) else current

    def release(self, connection_id: str, entity_type: str, holder: str) -> None:
        """Let go of our lease (no-op if it is not ours any more)."""
        key = lease_key(connection_id, entity_type)
        _guarded(lambda: self._release(keys=[key], args=[holder]))
