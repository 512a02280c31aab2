"""Per-connection rate and concurrency limits held in Redis, plus the Redis plumbing
shared with ``worker.resilience.breaker``.

Rate: a GCRA limiter per connection (``rate_per_s`` sustained, ``burst`` at once).
Its state is one number under the connection's hash tag and it is checked
inside ``Breaker.admit`` (same script, same round trip), so it is not called
from here; ``gcra`` below is the pure reference of the Lua version.

Concurrency: ``acquire_slot`` / ``renew_slot`` / ``release_slot`` keep a sorted
set of holders scored by expiry; expired holders are pruned inside each
script, so a crashed worker's slot frees itself after ``ttl_s``. A refused
acquire leaves the connection's waiting mark (``redis_keys.slot_waiters``),
which the task freeing a slot reads (``worker.sync.slot_wait``).

Overrides: ``set_connection_limits`` stores per-connection rate, burst and cap
in a Redis hash that the admit and acquire scripts read; a field left None
means "policy default". Redis may lose it (docs/design.md, principle 1): the SQL store keeps
the durable copy and the caller re-applies it (on start-up and periodically).
The hash lives ``RatePolicy.limits_ttl_s`` and every set refreshes it.

Errors: every redis exception becomes ``CoordinationError``
(``worker.coordination.scripts.coordination``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import redis

from worker.coordination import redis_keys
from worker.coordination.scripts import (
    Clock,
    LuaScript,
    ScriptCall,
    coordination,
    lua_source,
    now_arg,
    text,
)

# The files each script is joined from, after ``common``: ``admit.lua`` and
# ``record.lua`` define functions; the ``run_*`` files and ``record_admit.lua``
# call them, so a record and the next admission can share one round trip.
# The waiting mark outlives any wait it announces (a parked job retries within
# seconds); a stale one costs the next slot release one store read.
WAITING_MARK_TTL_S = 600

_PARTS = {
    "admit": ("gcra", "one_at_a_time", "admit", "run_admit"),
    "record": ("one_at_a_time", "record", "run_record"),
    "record_admit": ("gcra", "one_at_a_time", "record", "admit", "record_admit"),
    "pause": ("one_at_a_time", "pause"),
}


def lua(name: str) -> str:
    """The script ``name`` with the shared helpers prepended (``worker/resilience/lua``)."""
    return lua_source("worker.resilience", "common", *_PARTS.get(name, (name,)))


@dataclass(frozen=True, kw_only=True, slots=True)
class RatePolicy:
    """Defaults for every connection; per-connection overrides live in Redis."""

    rate_per_s: float = 10.0
    burst: int = 10
    max_concurrency: int = 4
    limits_ttl_s: float = 30 * 86_400.0

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1 or self.max_concurrency < 1:
            raise ValueError("rate_per_s must be > 0, burst and max_concurrency >= 1")


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionLimits:
    """One connection's overrides; None means the policy default applies."""

    rate_per_s: float | None = None
    burst: int | None = None
    max_concurrency: int | None = None


def gcra(
    tat: float | None, now: float, *, rate_per_s: float, burst: int
) -> tuple[bool, float, float]:
    """Pure GCRA step: (allowed, retry_in seconds, TAT to store).

    ``tat`` is the stored theoretical arrival time (None when absent). Up to
    ``burst`` calls pass at once, then one per ``1 / rate_per_s`` seconds.
    """
    interval = 1.0 / rate_per_s
    current = now if tat is None or tat < now else tat
    new_tat = current + interval
    allow_at = new_tat - burst * interval
    if now < allow_at:
        return False, allow_at - now, current
    return True, 0.0, new_tat


class Limits:
    """Concurrency slots and per-connection limit overrides of every connection.

    ``now_override`` is for tests only: a fake clock replacing Redis TIME.
    """

    def __init__(
        self,
        *,
        client: redis.Redis,
        policy: RatePolicy | None = None,
        now_override: Clock | None = None,
    ) -> None:
        self.redis = client
        self.policy = policy or RatePolicy()
        self.now_override = now_override
        self._slots = LuaScript(client, lua("slots"))

    def _slot_call(
        self, op: str, connection_id: str, holder_id: str, ttl_s: float, cap: int | None
    ) -> bool:
        call = self.slot_call(op, connection_id, holder_id, ttl_s=ttl_s, cap=cap)
        with coordination(f"{op}_slot {connection_id}"):
            return int(call.script(keys=call.keys, args=call.args)) == 1

    def slot_call(
        self, op: str, connection_id: str, holder_id: str, *, ttl_s: float, cap: int | None = None
    ) -> ScriptCall:
        """One slot operation (``acquire``, ``renew``, ``release``) to send with others;
        its reply is 1 (held / released) or 0."""
        keys = [
            redis_keys.slots(connection_id),
            redis_keys.limits(connection_id),
            redis_keys.slot_waiters(connection_id),
        ]
        args: list[Any] = [
            now_arg(self.now_override),
            op,
            holder_id,
            repr(float(ttl_s)),
            "" if cap is None else str(int(cap)),
            str(self.policy.max_concurrency),
            str(WAITING_MARK_TTL_S),
        ]
        return ScriptCall(self._slots, keys, args)

    def acquire_slot(
        self, connection_id: str, holder_id: str, *, ttl_s: float, cap: int | None = None
    ) -> bool:
        """Take one of the connection's concurrency slots for ``ttl_s`` seconds.

        ``cap`` None uses the connection's override, else the policy default.
        Acquiring a slot already held renews it. False when all slots are taken.
        """
        return self._slot_call("acquire", connection_id, holder_id, ttl_s, cap)

    def renew_slot(self, connection_id: str, holder_id: str, *, ttl_s: float) -> bool:
        """Extend a held slot to now + ``ttl_s``; False if it was lost (expired)."""
        return self._slot_call("renew", connection_id, holder_id, ttl_s, None)

    def release_slot(self, connection_id: str, holder_id: str) -> bool:
        """Give a slot back; False if it was not held (already expired)."""
        return self._slot_call("release", connection_id, holder_id, 0.0, None)

    def slot_holders(self, connection_id: str) -> list[str]:
        """Current holders (expired ones may still be listed until the next call)."""
        with coordination(f"slot_holders {connection_id}"):
            raw = self.redis.zrange(redis_keys.slots(connection_id), 0, -1)
        return [text(item) for item in raw]

    def set_connection_limits(
        self,
        connection_id: str,
        *,
        rate_per_s: float | None = None,
        burst: int | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        """Store a connection's overrides; each None removes that override."""
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        if (burst is not None and burst < 1) or (
            max_concurrency is not None and max_concurrency < 1
        ):
            raise ValueError("burst and max_concurrency must be >= 1")
        key = redis_keys.limits(connection_id)
        values = {"rate_per_s": rate_per_s, "burst": burst, "max_concurrency": max_concurrency}
        with coordination(f"set_connection_limits {connection_id}"):
            pipe = self.redis.pipeline(transaction=True)
            for name, value in values.items():
                if value is None:
                    pipe.hdel(key, name)
                else:
                    pipe.hset(key, name, repr(value))
            pipe.pexpire(key, math.ceil(self.policy.limits_ttl_s * 1000))
            pipe.execute()

    def get_connection_limits(self, connection_id: str) -> ConnectionLimits:
        """The overrides stored for a connection (None fields: policy default)."""
        with coordination(f"get_connection_limits {connection_id}"):
            raw = self.redis.hgetall(redis_keys.limits(connection_id))
        values = {text(k): text(v) for k, v in raw.items()}
        rate = values.get("rate_per_s")
        burst = values.get("burst")
        cap = values.get("max_concurrency")
        return ConnectionLimits(
            rate_per_s=float(rate) if rate is not None else None,
            burst=int(burst) if burst is not None else None,
            max_concurrency=int(cap) if cap is not None else None,
        )
