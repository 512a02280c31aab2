"""A per-connection retry budget, so retries cannot multiply an outage.

- ``RetryBudget``   the policy (pure): Finagle's reserve of retries per window
                    plus a share of the requests the connection made in it
- ``RetryBudgets``  spends it in Redis: requests are read from the breaker's
                    failure-rate window, retries are counted here

Only the retry path pays for this (one script read and one counting script),
never a request that succeeds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import redis

from worker.coordination import redis_keys
from worker.coordination.scripts import TtlCounter, coordination
from worker.resilience.breaker import Breaker


@dataclass(frozen=True, kw_only=True)
class RetryBudget:
    """How many retries one connection may spend per window (policy only).

    Finagle's shape: a fixed reserve of ``min_retries_per_window`` plus
    ``ratio`` of the first attempts sent in the same window. A budget stops
    retries from multiplying load on an upstream that is already failing; the
    counters themselves live elsewhere (Redis) and are passed in.
    """

    ratio: float = 0.2
    min_retries_per_window: int = 10

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ratio) and self.ratio >= 0):
            raise ValueError(f"ratio must be a finite number >= 0 (ratio={self.ratio})")
        if self.min_retries_per_window < 0:
            raise ValueError(f"min_retries_per_window must be >= 0 ({self.min_retries_per_window})")

    def limit(self, requests_in_window: int) -> int:
        """Return how many retries the window allows for that many first attempts."""
        return self.min_retries_per_window + math.floor(self.ratio * max(requests_in_window, 0))

    def allows(self, requests_in_window: int, retries_in_window: int) -> bool:
        """Say whether one more retry fits the budget.

        ``requests_in_window`` counts first attempts (not retries, or retries
        would buy themselves more budget); ``retries_in_window`` counts the
        retries already spent in the window.
        """
        return max(retries_in_window, 0) < self.limit(requests_in_window)


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
