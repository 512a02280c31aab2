"""Timestamps as the store keeps them: canonical, fixed-width UTC strings.

Upstream timestamps arrive as ISO-8601 with ``Z``, offsets, and anywhere from
zero to nine fractional digits. The store compares versions as text in SQLite
and PostgreSQL alike, so every instant is rewritten to one fixed-width form,
``YYYY-MM-DDTHH:MM:SS.ffffffZ``, whose text order is its time order (years
below 1000 keep four digits). Offsets are converted to UTC. The null-date
sentinel of old ERP systems (any instant on ``0001-01-01``, whatever its
offset, or ``0000-00-00``) is the earliest instant, ``NULL_DATE``: with a
positive offset it would fall before year 1, which ``datetime`` cannot hold.
Anything else that cannot be an instant raises ValueError, never another
exception, so a caller can quarantine the record with the reason.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

ONE_TICK = timedelta(microseconds=1)  # the finest step the store can tell apart
NULL_DATE = "0001-01-01T00:00:00.000000Z"  # the earliest instant the store holds
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
_NULL_DATE_DAYS = ("0001-01-01", "0000-00-00")
_MAX_LENGTH = 64  # no ISO-8601 instant is longer; bounds the work on junk


def is_null_date(value: object) -> bool:
    """Whether ``value`` is the null-date sentinel (``0001-01-01...`` or ``0000-00-00...``)."""
    return isinstance(value, str) and value[:10] in _NULL_DATE_DAYS


def parse_instant(value: object) -> datetime:
    """Parse an ISO-8601 instant into an aware UTC datetime.

    Raises ValueError for anything that is not a timestamp string. A value
    without an offset is taken as UTC (the contract says UTC throughout).
    """
    if not isinstance(value, str) or not 10 <= len(value) <= _MAX_LENGTH:
        raise ValueError(f"not an ISO-8601 timestamp: {str(value)[:_MAX_LENGTH]!r}")
    if is_null_date(value):
        return _EARLIEST
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00:00-05:00 is in year 10000 in UTC
        raise ValueError(f"{value!r} is outside years 1 to 9999 in UTC") from None


def canonical(moment: datetime) -> str:
    """The store's fixed-width UTC text for an aware datetime."""
    # Not strftime: its %Y drops the leading zeros of years below 1000, and
    # "999-..." sorts after "1999-..." as text.
    m = moment.astimezone(UTC)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T"
        f"{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}Z"
    )


def canonical_instant(value: object) -> str:
    """parse_instant then canonical: raises ValueError for a bad timestamp."""
    return canonical(parse_instant(value))


def after(instant: str) -> str:
    """The smallest canonical instant strictly later than ``instant`` (ValueError past 9999)."""
    try:
        return canonical(parse_instant(instant) + ONE_TICK)
    except OverflowError:
        raise ValueError(f"no instant after {instant!r}") from None


def utc_now() -> str:
    """Now, as canonical text."""
    return canonical(datetime.now(UTC))


def unix_to_instant(seconds: float | None) -> str | None:
    """A unix time (a Redis-clock ``until``, say) as the store's canonical text."""
    return None if seconds is None else canonical(datetime.fromtimestamp(seconds, UTC))
