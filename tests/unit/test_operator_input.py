"""The checks on operator input and the readers of stored values (worker/operator_input.py)."""

from __future__ import annotations

import math

import pytest

from worker.operator_input import (
    InvalidInput,
    check_http_url,
    check_interval,
    check_limits,
    clean_secret,
    decode_secret_bytes,
    usable_interval,
    usable_limits,
)


@pytest.mark.parametrize(
    ("rate", "burst", "cap"),
    [
        (0.0, None, None),
        (math.nan, None, None),
        (math.inf, None, None),
        (-1.0, None, None),
        (10_000.5, None, None),
        (None, 0, None),
        (None, 10_001, None),
        (None, None, 0),
        (None, None, 1001),
    ],
)
def test_limits_out_of_range_are_refused(
    rate: float | None, burst: int | None, cap: int | None
) -> None:
    with pytest.raises(InvalidInput):
        check_limits(rate, burst, cap)


def test_limits_in_range_and_defaults_pass() -> None:
    assert check_limits(0.01, 1, 1).rate_per_second == 0.01
    assert check_limits(None, None, None).max_concurrency is None


def test_stored_limits_fall_back_one_by_one() -> None:
    values, problems = usable_limits(math.nan, 5, "x")
    assert (values.rate_per_second, values.rate_burst, values.max_concurrency) == (None, 5, None)
    assert len(problems) == 2
    assert usable_limits(None, None, None)[1] == []
    assert usable_limits(2.5, 3.0, 4)[0].rate_burst == 3


def test_intervals() -> None:
    for bad in (-60, 0, 7 * 86_400 + 1):
        with pytest.raises(InvalidInput, match="SECONDS"):
            check_interval(bad)
    assert check_interval(None) is None and check_interval(60) == 60
    assert [usable_interval(v) for v in (-60, 0, None, "x", 1.5, 60)] == [
        None,
        None,
        None,
        None,
        None,
        60,
    ]


def test_urls() -> None:
    assert check_http_url("https://api.example/v1/", what="u") == "https://api.example/v1"
    for bad in ("ftp://a", "https://", "//a", "https://a:70000", "https://a/\x00", "http://a b"):
        with pytest.raises(InvalidInput, match="u:"):
            check_http_url(bad, what="u")


def test_secrets_are_cleaned_and_never_echoed() -> None:
    assert clean_secret("\ufeffabc\r\n", what="token") == "abc"
    assert decode_secret_bytes(b"\xef\xbb\xbfabc\n", what="token") == "abc\n"
    with pytest.raises(InvalidInput, match="no token"):
        clean_secret("\ufeff\n", what="token")
    with pytest.raises(InvalidInput, match="longer"):
        clean_secret("a" * 9000, what="token")
    for bad in ("ab\u200bSECRET", "ab\x00SECRET", "ab SECRET", "ab\u00e9SECRET", "ab\u2028SECRET"):
        with pytest.raises(InvalidInput) as caught:
            clean_secret(bad, what="token")
        assert "SECRET" not in str(caught.value)
    with pytest.raises(InvalidInput, match="not UTF-8"):
        decode_secret_bytes(b"\xff\xfe", what="token")
