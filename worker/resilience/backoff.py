"""Backoff arithmetic: full jitter, with the server's Retry-After as a floor.

Pure functions, no I/O and no sleeping: randomness and the clock are passed in,
so every decision is testable exactly. Callers decide *where* to wait (a parked
job, a Redis pause key); this module only says *how long*.

- ``full_jitter``       uniform(0, min(cap, base * 2**attempt)), the AWS recipe
- ``retry_delay``       full jitter with the server's Retry-After as a floor
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

__all__ = ["full_jitter", "retry_delay"]

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
