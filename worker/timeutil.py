"""Timestamps as the store keeps them: canonical, fixed-width UTC strings.

Upstream timestamps arrive as ISO-8601 with ``Z``, offsets, and anywhere from
zero to nine fractional digits. The store compares versions as text in SQLite
and PostgreSQL alike, so every instant is rewritten to one fixed-width form,
``YYYY-MM-DDTHH:MM:SS.ffffffZ``, whose text order is its time order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

ONE_TICK = timedelta(microseconds=1)  # the finest step the store can tell apart


def parse_instant(value: object) -> datetime:
    """Parse an ISO-8601 instant into an aware UTC datetime.

    Raises ValueError for anything that is not a timestamp string. A value
    without an offset is taken as UTC (the contract says UTC throughout).
    """
    if not isinstance(value, str) or len(value) < 10:
        raise ValueError(f"not an ISO-8601 timestamp: {value!r}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def canonical(moment: datetime) -> str:
    """The store's fixed-width UTC text for an aware datetime."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_instant(value: object) -> str:
    """parse_instant then canonical: raises ValueError for a bad timestamp."""
    return canonical(parse_instant(value))


def after(instant: str) -> str:
    """The smallest canonical instant strictly later than ``instant``."""
    return canonical(parse_instant(instant) + ONE_TICK)


def utc_now() -> str:
    """Now, as canonical text."""
    return canonical(datetime.now(UTC))
