"""Unit tests for worker.resilience.backoff: jitter bounds, Retry-After, retry floor, budget."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.resilience.backoff import full_jitter, retry_delay
from worker.resilience.retry_budget import RetryBudget

NOW = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


# --- full jitter -------------------------------------------------------------------


@given(
    attempt=st.integers(min_value=-10, max_value=10**6),
    base=st.floats(min_value=0, max_value=1e6),
    cap=st.floats(min_value=0, max_value=1e6),
    r=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_full_jitter_stays_within_zero_and_the_ceiling(
    attempt: int, base: float, cap: float, r: float
) -> None:
    delay = full_jitter(attempt, base=base, cap=cap, rand=lambda: r)
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 0), 1023))

    assert math.isfinite(delay)
    assert 0.0 <= delay <= ceiling <= cap


@given(attempt=st.integers(min_value=0, max_value=10**9))
def test_full_jitter_does_not_overflow_for_huge_attempts(attempt: int) -> None:
    assert full_jitter(attempt, base=1.0, cap=60.0, rand=lambda: 0.5) <= 30.0


def test_full_jitter_is_uniform_over_the_exponential_ceiling() -> None:
    assert full_jitter(0, base=0.5, cap=60.0, rand=lambda: 0.999) == pytest.approx(0.4995)
    assert full_jitter(3, base=0.5, cap=60.0, rand=lambda: 0.5) == pytest.approx(2.0)
    assert full_jitter(10, base=0.5, cap=60.0, rand=lambda: 0.5) == pytest.approx(30.0)
    assert full_jitter(3, base=0.5, cap=60.0, rand=lambda: 0.0) == 0.0


def test_full_jitter_negative_attempt_counts_as_zero() -> None:
    assert full_jitter(-5, base=2.0, cap=60.0, rand=lambda: 0.5) == pytest.approx(1.0)


@pytest.mark.parametrize("r", [-0.5, 1.5, 7.0])
def test_full_jitter_clamps_a_bad_random_source(r: float) -> None:
    assert 0.0 <= full_jitter(2, base=1.0, cap=10.0, rand=lambda: r) <= 4.0


def test_full_jitter_default_random_source() -> None:
    for attempt in range(20):
        assert 0.0 <= full_jitter(attempt, base=0.1, cap=5.0) <= 5.0


@pytest.mark.parametrize(("base", "cap"), [(-1.0, 10.0), (1.0, -10.0)])
def test_full_jitter_refuses_negative_parameters(base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        full_jitter(1, base=base, cap=cap)


# --- retry_delay ----------------------------------------------------------------------


def test_retry_after_is_a_floor_under_jitter() -> None:
    assert retry_delay(0, base=1.0, cap=60.0, retry_after=30.0, rand=lambda: 0.5) == 30.0


def test_jitter_wins_when_above_retry_after() -> None:
    assert retry_delay(6, base=1.0, cap=60.0, retry_after=5.0, rand=lambda: 0.5) == 30.0


def test_retry_after_floor_is_not_shortened_by_cap() -> None:
    assert retry_delay(1, base=1.0, cap=10.0, retry_after=120.0, rand=lambda: 0.9) == 120.0


@pytest.mark.parametrize("retry_after", [None, float("nan"), float("inf")])
def test_retry_delay_without_a_usable_retry_after_is_plain_jitter(
    retry_after: float | None,
) -> None:
    assert retry_delay(2, base=1.0, cap=60.0, retry_after=retry_after, rand=lambda: 0.5) == 2.0


@given(
    st.integers(min_value=0, max_value=10**4),
    st.one_of(st.none(), st.floats(min_value=0, max_value=3600)),
    st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_retry_delay_is_at_least_retry_after_and_within_bounds(
    attempt: int, retry_after: float | None, r: float
) -> None:
    delay = retry_delay(attempt, base=0.5, cap=60.0, retry_after=retry_after, rand=lambda: r)
    assert delay >= (retry_after or 0.0)
    assert delay <= max(60.0, retry_after or 0.0)


# --- retry budget ------------------------------------------------------------------------


def test_budget_defaults_follow_finagle() -> None:
    budget = RetryBudget()
    assert (budget.ratio, budget.min_retries_per_window) == (0.2, 10)


def test_budget_reserve_allows_retries_with_few_requests() -> None:
    budget = RetryBudget(ratio=0.2, min_retries_per_window=10)
    assert budget.allows(0, 0)
    assert budget.allows(0, 9)
    assert not budget.allows(0, 10)


def test_budget_grows_with_requests() -> None:
    budget = RetryBudget(ratio=0.2, min_retries_per_window=10)
    assert budget.limit(100) == 30
    assert budget.allows(100, 29)
    assert not budget.allows(100, 30)
    assert budget.limit(1000) == 210


def test_budget_zero_means_no_retries() -> None:
    assert not RetryBudget(ratio=0.0, min_retries_per_window=0).allows(10_000, 0)


def test_budget_tolerates_negative_counters() -> None:
    budget = RetryBudget(ratio=0.2, min_retries_per_window=1)
    assert budget.limit(-50) == 1
    assert budget.allows(-50, -3)


@pytest.mark.parametrize(
    ("ratio", "minimum"), [(-0.1, 10), (float("nan"), 10), (float("inf"), 10), (0.2, -1)]
)
def test_budget_refuses_nonsense_policy(ratio: float, minimum: int) -> None:
    with pytest.raises(ValueError):
        RetryBudget(ratio=ratio, min_retries_per_window=minimum)


@given(
    st.floats(min_value=0, max_value=5),
    st.integers(min_value=0, max_value=1000),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=10**6),
)
def test_budget_is_monotonic(ratio: float, minimum: int, requests: int, retries: int) -> None:
    budget = RetryBudget(ratio=ratio, min_retries_per_window=minimum)
    if budget.allows(requests, retries):
        # More requests never take budget away; fewer spent retries never do either.
        assert budget.allows(requests + 1, retries)
        assert retries == 0 or budget.allows(requests, retries - 1)
    else:
        assert not budget.allows(requests, retries + 1)
    assert retries >= budget.limit(requests) or budget.allows(requests, retries)
