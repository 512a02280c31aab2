"""The ``Retry-After`` header as seconds: delay-seconds or an HTTP-date, clamped.

The upstream client turns the header into the ``retry_after`` of the error it
raises; the policy above (``worker.resilience.backoff.retry_delay``) takes
seconds and never sees a header.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# delay-seconds is "1*DIGIT" (RFC 9110); we also accept a decimal fraction
# because some servers send "1.5". Signs, exponents, "inf" and "nan" are not
# delays, so they fall through to the HTTP-date parser and then to default.
_DELAY_SECONDS = re.compile(r"\d+(?:\.\d+)?", re.ASCII)


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
