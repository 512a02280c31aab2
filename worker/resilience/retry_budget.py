"""A per-connection retry budget, so retries cannot multiply an outage.

Finagle's shape (``worker.resilience.backoff.RetryBudget``): a reserve of retries per
window plus a share of the requests the connection made in it. Requests are
read from the breaker's failure-rate window; retries are counted here. Only
the retry path pays for this (one script read and one counting script), never a
request that succeeds.
"""

from __future__ import annotations

import time

import redis

from worker.coordination import redis_keys
from worker.coordination.scripts import TtlCounter, coordination
from worker.resilience.backoff import RetryBudget
from worker.resilience.breaker import Breaker


class RetryBudgets:
    """Spends retries of each connection against its budget, in Redis."""

    def __init__(
        self, client: redis.Redis, breaker: Breaker, *, budget: RetryBudget, window_s: float
    ) -> None:
        self._redis = client
        self._counter = TtlCounter(client)
        self._breaker = breaker
        self._budget = budget
        self._window_s = window_s

    def spend(self, connection_id: str) -> bool:
        """Take one retry from the connection's budget; False when it is spent."""
        view = self._breaker.show(connection_id)
        requests = max(view.connection.calls, sum(level.calls for level in view.entity_types))
        window = int(time.time() // self._window_s)
        key = redis_keys.retry_budget(connection_id, window)
        spent = self._counter.count(key, ttl_s=self._window_s * 2)
        if self._budget.allows(requests, spent - 1):
            return True
        with coordination(f"retry budget of {connection_id}"):
            self._redis.decr(key)  # a refused retry is not spent
        return False
