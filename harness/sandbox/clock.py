"""Instants as integer microseconds since the Unix epoch, and their text forms.

The sandbox keeps every ``updatedAt`` as an ``int`` of microseconds: integers
sort and bisect fast, compare exactly, and never lose a fractional second.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from email.utils import formatdate

US_PER_S = 1_000_000


def now_us() -> int:
    """The sandbox's wall clock, ``datetime.now(UTC)``, in microseconds."""
    return to_us(datetime.now(UTC))


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Integer arithmetic: a float timestamp would round microseconds away.
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds


_DAY_PREFIX: dict[int, str] = {}


def format_instant(us: int) -> str:
    """ISO-8601 in UTC with ``Z``: second precision, or microseconds when present."""
    seconds, fraction = divmod(us, US_PER_S)
    day, second_of_day = divmod(seconds, 86_400)
    # Formatting the date once per day and the time by arithmetic is several
    # times faster than strftime, which matters for 100k records at once.
    prefix = _DAY_PREFIX.get(day)
    if prefix is None:
        prefix = _DAY_PREFIX[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86_400))
    hours, rest = divmod(second_of_day, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{prefix}{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{text}Z" if fraction == 0 else f"{text}.{fraction:06d}Z"


def parse_instant(text: str) -> int:
    """Parse an ISO-8601 instant (``Z``, offsets, fractional seconds) to microseconds.

    A value without an offset is taken as UTC. Raises ``ValueError`` when the
    text is not an instant.
    """
    text = text.strip()
    if not text or len(text) > 64:
        raise ValueError("not an ISO-8601 instant")
    return to_us(datetime.fromisoformat(text))


def http_date(epoch_s: float) -> str:
    """An RFC 9110 HTTP-date (``Sun, 06 Nov 1994 08:49:37 GMT``)."""
    return formatdate(epoch_s, usegmt=True)


def ceil_seconds(seconds: float) -> int:
    """Whole seconds, rounded up, never below zero: the unit of ``Retry-After``."""
    return max(0, math.ceil(seconds))
