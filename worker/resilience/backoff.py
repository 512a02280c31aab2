"""Backoff arithmetic: full jitter and Retry-After parsing.

Pure functions, no I/O and no sleeping: randomness and the clock are passed in,
so every decision is testable exactly. Callers decide *where* to wait (a parked
job, a Redis pause key); this module only says *how long*.

- ``full_jitter``       uniform(0, min(cap, base * 2**attempt)), the AWS recipe
- ``parse_retry_after`` delay-seconds or HTTP-date -> seconds, clamped
- ``retry_delay``       full jitter with the server's Retry-After as a floor
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["full_jitter", "parse_retry_after", "retry_delay"]

# delay-seconds is "1*DIGIT" (RFC 9110); we also accept a decimal fraction
# because some servers send "1.5". Signs, exponents, "inf" and "nan" are not
# delays, so they fall through to the HTTP-date parser and then to default.
_DELAY_SECONDS = re.compile(r"\d+(?:\.\d+)?", re.ASCII)

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


def parse_retry_after(
    value: str | None,
    *,
    now: datetime,
    max_s: float,
    default_s: float | None = None,
) -> float | None:
    """Turn a ``Retry-After`` header into seconds from ``now``, within [0, max_s].

    Accepts delay-seconds ("120", also "1.5") and HTTP-dates
    ("Wed, 21 Oct 2026 07:28:00 GMT"). A date in the past gives 0. A missing or
    unparseable value gives ``default_s`` (also clamped), which may be None.
    A naive ``now`` or naive date is taken as UTC.
    """
    if max_s < 0:
        raise ValueError(f"max_s must be >= 0 (max_s={max_s})")
    seconds = _parse_seconds(value, now=now)
    if seconds is None:
        return None if default_s is None else _clamp(default_s, max_s)
    return _clamp(seconds, max_s)


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
    under our own backoff; our ``cap`` does not shorten it (``parse_retry_after``
    already clamped it to the configured maximum).
    """
    delay = full_jitter(attempt, base=base, cap=cap, rand=rand)
    if retry_after is None or not math.isfinite(retry_after):
        return delay
    return max(delay, retry_after)


def _parse_seconds(value: str | None, *, now: datetime) -> float | None:
    """Return the raw (unclamped) delay in seconds, or None when unparseable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELAY_SECONDS.fullmatch(text):
        # A digit string too long for a float becomes inf, which _clamp caps at max_s.
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        # parsedate_to_datetime raises ValueError on garbage in 3.11+, but older
        # email.utils paths have raised TypeError/IndexError on odd input.
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    try:
        return (when - now).total_seconds()
    except OverflowError:
        return None


def _clamp(seconds: float, max_s: float) -> float:
    """Clamp into [0, max_s]; NaN counts as 0 so it can never leak into a sleep."""
    if math.isnan(seconds):
        return 0.0
    return min(max(seconds, 0.0), max_s)
