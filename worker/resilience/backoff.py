"""Backoff arithmetic: full jitter and a retry budget.

Pure functions, no I/O and no sleeping: randomness and the clock are passed in,
so every decision is testable exactly. Callers decide *where* to wait (a parked
job, a Redis pause key); this module only says *how long*.

- ``full_jitter``       uniform(0, min(cap, base * 2**attempt)), the AWS recipe
- ``retry_delay``       full jitter with the server's Retry-After as a floor
- ``RetryBudget``       retries allowed per connection per window (Finagle)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RetryBudget", "full_jitter", "retry_delay"]

# 2.0 ** 1024 overflows a float; beyond this exponent the ceiling is cap anyway.
_MAX_EXPONENT = 1023


def full_jitter(
    attempt: int,
    *,
    base: float,
    cap: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Return a delay drawn uniformly from [0, min(cap, base * 2**attempt)].

    ``attempt`` counts from 0; negative attempts count as 0. Huge attempts do not
    overflow: the ceiling simply stays at ``cap``. ``rand`` returns a float in
    [0, 1); values outside are clamped so a bad injected source cannot escape
    the bounds.
    """
    if base < 0 or cap < 0:
        raise ValueError(f"base and cap must be >= 0 (base={base}, cap={cap})")
    exponent = min(max(attempt, 0), _MAX_EXPONENT)
    # base * 2.0**1023 may be inf for base > 2; min() then picks cap, no error.
    ceiling = min(cap, base * 2.0**exponent)
    fraction = min(max(rand(), 0.0), 1.0)
    return fraction * ceiling


def retry_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Return the full-jitter delay, but never less than ``retry_after``.

    The server's Retry-After is authoritative (docs/upstream-api.md), so it is a floor
    under our own backoff; our ``cap`` does not shorten it (the upstream client's
    ``parse_retry_after`` already clamped it to the configured maximum).
    """
    delay = full_jitter(attempt, base=base, cap=cap, rand=rand)
    if retry_after is None or not math.isfinite(retry_after):
        return delay
    return max(delay, retry_after)


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
