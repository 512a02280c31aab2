"""Integration tests for worker.resilience.limits: the GCRA limiter inside ``admit``, concurrency
slots and per-connection overrides, against a real Redis (DB 15, flushed per test).
"""

from __future__ import annotations

import threading
import time

import pytest
import redis

from tests.support import SCRIPTS_REDIS_URL, FakeClock
from worker.coordination.client import redis_client
from worker.errors import CoordinationError
from worker.resilience.breaker import Breaker, Reason
from worker.resilience.limits import ConnectionLimits, Limits, RatePolicy

pytestmark = pytest.mark.integration

REDIS_URL = SCRIPTS_REDIS_URL


def test_gcra_allows_the_burst_then_spaces_requests_at_the_rate(client: redis.Redis) -> None:
    clock = FakeClock()
    b = Breaker(client=client, rate=RatePolicy(rate_per_s=4.0, burst=3), now_override=clock)
    assert all(b.admit("c1", "assets").allowed for _ in range(3))
    denied = b.admit("c1", "sites")
    assert (denied.allowed, denied.reason) == (False, Reason.RATE_LIMITED)
    assert denied.retry_in == pytest.approx(0.25)
    assert denied.until == pytest.approx(clock.now + 0.25)
    clock.now += 0.25
    assert b.admit("c1").allowed
    assert not b.admit("c1").allowed
    clock.now += 0.1
    assert b.admit("c1").retry_in == pytest.approx(0.15)
    clock.now += 10  # idle time refills the burst, no more
    assert sum(b.admit("c1").allowed for _ in range(5)) == 3
    assert b.admit("c2").allowed  # per connection


def test_gcra_rate_with_redis_clock(client: redis.Redis) -> None:
    b = Breaker(client=client, rate=RatePolicy(rate_per_s=20.0, burst=5))
    granted = 0
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        a = b.admit("c1")
        if a.allowed:
            granted += 1
        else:
            time.sleep(min(a.retry_in, 0.01))
    assert 5 + 8 <= granted <= 5 + 12  # burst + ~0.5 s at 20/s


def test_rate_override_per_connection(client: redis.Redis) -> None:
    clock = FakeClock()
    limits = Limits(client=client)
    b = Breaker(client=client, rate=RatePolicy(rate_per_s=100.0, burst=100), now_override=clock)
    limits.set_connection_limits("slow", rate_per_s=1.0, burst=2)
    assert [b.admit("slow").allowed for _ in range(3)] == [True, True, False]
    assert b.admit("slow").retry_in == pytest.approx(1.0)
    assert all(b.admit("fast").allowed for _ in range(50))
    assert limits.get_connection_limits("slow") == ConnectionLimits(rate_per_s=1.0, burst=2)
    limits.set_connection_limits("slow", burst=3)  # rate back to the default
    assert limits.get_connection_limits("slow") == ConnectionLimits(burst=3)
    assert client.pttl("{cb:slow}:limits") > 0


def test_concurrency_cap_with_release_renew_and_expiry(client: redis.Redis) -> None:
    limits = Limits(client=client, policy=RatePolicy(max_concurrency=2))
    assert limits.acquire_slot("c1", "w1", ttl_s=0.5)
    assert limits.acquire_slot("c1", "w2", ttl_s=5)
    assert not limits.acquire_slot("c1", "w3", ttl_s=5)
    assert limits.acquire_slot("c1", "w1", ttl_s=0.5)  # re-acquire is a renewal
    assert limits.acquire_slot("c2", "w3", ttl_s=5)  # per connection
    assert limits.release_slot("c1", "w2")
    assert not limits.release_slot("c1", "w2")
    assert limits.acquire_slot("c1", "w3", ttl_s=5)
    assert 0 < client.pttl("{cb:c1}:slots") <= 6000
    time.sleep(0.55)  # w1 crashed: its slot expires
    assert not limits.renew_slot("c1", "w1", ttl_s=5)
    assert limits.acquire_slot("c1", "w4", ttl_s=5)
    assert limits.renew_slot("c1", "w4", ttl_s=5)
    assert sorted(limits.slot_holders("c1")) == ["w3", "w4"]


def test_concurrency_cap_override_and_explicit_cap(client: redis.Redis) -> None:
    limits = Limits(client=client, policy=RatePolicy(max_concurrency=1))
    limits.set_connection_limits("c1", max_concurrency=3)
    assert [limits.acquire_slot("c1", f"w{i}", ttl_s=5) for i in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert limits.acquire_slot("c1", "w9", ttl_s=5, cap=4)


def test_concurrency_cap_holds_under_contention(client: redis.Redis) -> None:
    limits = Limits(client=client)
    barrier = threading.Barrier(20)
    got: list[bool] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        ok = limits.acquire_slot("c1", f"w{i}", ttl_s=5, cap=3)
        with lock:
            got.append(ok)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(got) == 3


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        RatePolicy(rate_per_s=0)
    limits = Limits(client=redis.Redis.from_url(REDIS_URL))
    with pytest.raises(ValueError):
        limits.set_connection_limits("c1", burst=0)


def test_redis_unreachable_raises_coordination_error_quickly() -> None:
    limits = Limits(
        client=redis_client("redis://127.0.0.1:1/0", timeout_s=0.3, connect_timeout_s=0.3)
    )
    started = time.monotonic()
    with pytest.raises(CoordinationError):
        limits.acquire_slot("c1", "w1", ttl_s=5)
    with pytest.raises(CoordinationError):
        limits.set_connection_limits("c1", burst=3)
    assert time.monotonic() - started < 2.0
