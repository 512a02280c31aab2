"""One notifier's hold on a connection's deliveries: a Redis lock and a store fence.

The lock (``{cb:<c>}:notify``) keeps a second notifier out while this one
delivers, and is renewed before every POST; its TTL is several times the
longest a POST may take, so a live holder never loses it in the middle of
one. The fence covers what the lock cannot: a holder paused past the TTL
(a stopped process, a long GC) or a Redis that lost the key (a restart or a
failover). Each holder raises the connection's fence in the store when it
takes the lock, and every outcome it records carries that number
(``SqlStore.mark_event(fence=...)``); once a newer holder has raised it, the
old one can neither mark anything nor, checking before its next POST, send
anything. The fence lives in the store, not in Redis, so a flushed Redis
cannot roll it back. A pass that finds nothing due never raises it, so an
idle sweep costs no write.
"""

from __future__ import annotations

import contextlib

import redis

from worker.coordination import redis_keys
from worker.coordination.lease import Lock
from worker.errors import CoordinationError
from worker.store import SqlStore


class DeliveryHold:
    """Take, renew, check and release one connection's delivery lock and fence."""

    def __init__(
        self,
        *,
        store: SqlStore,
        cache: redis.Redis,
        connection_id: str,
        holder: str,
        ttl_s: float,
    ) -> None:
        self._store = store
        self._lock = Lock(cache, ttl_s=ttl_s)
        self._key = redis_keys.notify_lease(connection_id)
        self._holder = holder
        self.connection_id = connection_id
        self.fence: int | None = None

    def take(self) -> bool:
        """Take the lock; False while another notifier holds it."""
        return self._lock.take(self._key, self._holder)

    def raise_fence(self) -> None:
        """Raise the connection's fence: from now on only this holder records outcomes.

        Call it before reading the events to deliver, so that whatever an
        older holder recorded is read, and whatever it tries to record later
        is refused. A pass with nothing due never calls it (no write).
        """
        try:
            self.fence = self._store.take_notify_fence(self.connection_id)
        except BaseException:
            self.release()  # else the connection waits a whole TTL for nothing
            raise

    def renew(self) -> bool:
        """Before a POST: extend the lock and check the fence; False when either is lost.

        The lock first: once it is ours again for a whole TTL, no notifier can
        take it and raise the fence before this POST has ended.
        """
        if self.fence is None:
            return False
        if not self._lock.take(self._key, self._holder):
            return False
        return self._store.holds_notify_fence(self.connection_id, self.fence)

    @property
    def token(self) -> tuple[str, int]:
        """(connection id, fence): what ``mark_event`` checks."""
        if self.fence is None:
            raise RuntimeError("the delivery hold was not taken")
        return (self.connection_id, self.fence)

    def release(self) -> None:
        """Give the lock back (if still ours); the fence stays where it is."""
        with contextlib.suppress(CoordinationError):  # else the lock expires by itself
            self._lock.release(self._key, self._holder)
