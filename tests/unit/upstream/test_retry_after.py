"""``parse_retry_after``: delay-seconds and HTTP-dates, clamped, never raising."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.upstream.retry_after import parse_retry_after

NOW = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 30 ", 30.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("0.25", 0.25),
        ("007", 7.0),
    ],
)
def test_retry_after_in_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, now=NOW, max_s=3600) == expected


def test_retry_after_http_date_in_the_future() -> None:
    value = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(value, now=NOW, max_s=3600) == 90.0


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    value = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(value, now=NOW, max_s=3600, default_s=5.0) == 0.0


def test_retry_after_rfc_example_date() -> None:
    now = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now, max_s=3600) == 60.0


def test_retry_after_date_with_offset_and_minus_zero_zone() -> None:
    plus_two = NOW.astimezone(timezone(timedelta(hours=2))) + timedelta(seconds=10)
    assert parse_retry_after(format_datetime(plus_two), now=NOW, max_s=3600) == 10.0
    # "-0000" yields a naive datetime: it is UTC.
    minus_zero = "Fri, 27 Nov 2026 10:00:20 -0000"
    assert parse_retry_after(minus_zero, now=NOW, max_s=3600) == 20.0


def test_retry_after_naive_now_is_utc() -> None:
    value = format_datetime(NOW + timedelta(seconds=5), usegmt=True)
    assert parse_retry_after(value, now=NOW.replace(tzinfo=None), max_s=3600) == 5.0


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "-5",
        "+5",
        "1e3",
        "inf",
        "nan",
        "NaN",
        "1_000",
        "١٢",  # Arabic-Indic digits: not ASCII delay-seconds
        "12 seconds",
        "Wed, 32 Oct 2015 07:28:00 GMT",
        "Wed, 21 Oct 99999 07:28:00 GMT",
        "<html>",
    ],
)
def test_retry_after_garbage_gives_the_default(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW, max_s=3600, default_s=5.0) == 5.0
    assert parse_retry_after(value, now=NOW, max_s=3600) is None


def test_retry_after_is_clamped_to_max() -> None:
    assert parse_retry_after("86400", now=NOW, max_s=300) == 300.0
    assert parse_retry_after("9" * 500, now=NOW, max_s=300) == 300.0
    far = format_datetime(NOW + timedelta(days=30), usegmt=True)
    assert parse_retry_after(far, now=NOW, max_s=300) == 300.0


def test_retry_after_default_is_clamped_too() -> None:
    assert parse_retry_after(None, now=NOW, max_s=60, default_s=600.0) == 60.0
    assert parse_retry_after(None, now=NOW, max_s=60, default_s=-1.0) == 0.0


def test_retry_after_refuses_a_negative_max() -> None:
    with pytest.raises(ValueError):
        parse_retry_after("1", now=NOW, max_s=-1)


@given(st.one_of(st.none(), st.text(max_size=200)), st.floats(min_value=0, max_value=1e9))
def test_retry_after_never_raises_and_stays_in_range(value: str | None, max_s: float) -> None:
    result = parse_retry_after(value, now=NOW, max_s=max_s, default_s=1.0)
    assert result is not None
    assert 0.0 <= result <= max_s


@given(st.integers(min_value=0, max_value=10**7))
def test_retry_after_seconds_round_trip(seconds: int) -> None:
    assert parse_retry_after(str(seconds), now=NOW, max_s=10**6) == min(seconds, 10**6)
