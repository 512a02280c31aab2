"""Unit tests (no network) for the breaker's and limiter's pure helpers.

The Lua scripts mirror these functions; ``tests/integration/breakers/test_breaker_model.py``
checks that the scripts and a Python model built on them agree.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.errors import Kind, Scope
from worker.resilience.breaker import BreakerPolicy, Outcome, level_effects, open_interval
from worker.resilience.limits import gcra

POLICY = BreakerPolicy(base_open_s=5.0, max_open_s=600.0, min_open_s=1.0)


@given(
    openings=st.integers(min_value=0, max_value=2000),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    retry_after=st.none() | st.floats(min_value=0.0, max_value=86_400.0),
)
def test_open_interval_is_bounded(openings: int, jitter: float, retry_after: float | None) -> None:
    interval = open_interval(POLICY, openings=openings, jitter=jitter, retry_after=retry_after)
    ceiling = min(POLICY.max_open_s, POLICY.base_open_s * 2.0 ** min(openings, 64))
    assert interval >= POLICY.min_open_s  # never flaps instantly
    assert interval >= (retry_after or 0.0)  # Retry-After is a floor
    assert interval <= max(ceiling, POLICY.min_open_s, retry_after or 0.0)


def test_open_interval_grows_exponentially_to_the_cap_with_full_jitter() -> None:
    full = [open_interval(POLICY, openings=n, jitter=1.0) for n in range(10)]
    assert full == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 600.0, 600.0, 600.0]
    assert open_interval(POLICY, openings=3, jitter=0.5) == 20.0
    assert open_interval(POLICY, openings=3, jitter=0.0) == POLICY.min_open_s


def test_policy_rejects_inconsistent_values() -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(min_open_s=10.0, base_open_s=5.0)
    with pytest.raises(ValueError):
        BreakerPolicy(failure_rate=0.0)
    with pytest.raises(ValueError):
        BreakerPolicy(state_ttl_s=10.0)


@pytest.mark.parametrize(
    ("scope", "counts", "has_entity"),
    list(itertools.product(list(Scope), [True, False], [True, False])),
)
def test_level_effects_put_a_failure_on_one_level_at_most(
    scope: Scope, counts: bool, has_entity: bool
) -> None:
    outcome = Outcome.failure(Kind.UNAVAILABLE, counts_as_failure=counts, scope=scope)
    conn, ent = level_effects(outcome, has_entity=has_entity)
    if not counts or scope is Scope.RECORD:
        assert (conn, ent) == ("neutral", "neutral")
    elif scope is Scope.ENTITY_TYPE and has_entity:
        assert (conn, ent) == ("neutral", "failure")
    else:
        assert (conn, ent) == ("failure", "neutral")
    assert level_effects(Outcome.ok(), has_entity=has_entity) == ("success", "success")


def test_gcra_burst_then_rate() -> None:
    tat: float | None = None
    results = []
    for _ in range(4):
        ok, retry_in, tat = gcra(tat, 100.0, rate_per_s=2.0, burst=3)
        results.append((ok, retry_in))
    assert results == [(True, 0.0), (True, 0.0), (True, 0.0), (False, 0.5)]
    assert gcra(tat, 100.5, rate_per_s=2.0, burst=3)[0]


@given(
    rate=st.floats(min_value=0.5, max_value=50.0),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=200),
)
def test_gcra_never_exceeds_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float]
) -> None:
    tat: float | None = None
    now = 0.0
    granted = 0
    for gap in gaps:
        now += gap
        ok, retry_in, tat = gcra(tat, now, rate_per_s=rate, burst=burst)
        granted += ok
        assert retry_in >= 0.0 and (ok or retry_in > 0.0)
        assert granted <= burst + rate * now + 1e-9
