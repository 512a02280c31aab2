"""The per-connection retry budget, against real Redis."""

from __future__ import annotations

from typing import Any

import pytest

from worker.resilience.breaker import Breaker, Outcome
from worker.resilience.retry_budget import RetryBudget, RetryBudgets

pytestmark = pytest.mark.integration


def test_a_connection_spends_its_reserve_plus_a_share_of_its_requests(test_redis: Any) -> None:
    breaker = Breaker(client=test_redis)
    budgets = RetryBudgets(
        test_redis,
        breaker,
        budget=RetryBudget(ratio=0.5, min_retries_per_window=2),
        window_s=60,
    )
    assert [budgets.spend("c1") for _ in range(3)] == [True, True, False]
    for _ in range(4):  # four requests in the window buy two more retries
        breaker.record(breaker.admit("c1", "assets"), outcome=Outcome.ok())
    assert [budgets.spend("c1") for _ in range(3)] == [True, True, False]
    assert budgets.spend("another-connection") is True
