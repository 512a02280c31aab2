"""Integration tests for worker.resilience.breaker against a real Redis (DB 15, flushed per test).

Tests that are about the clock (open -> half-open, pause, probe expiry) use
Redis TIME with sub-second windows and real sleeps; the others pin the
scripts' clock with ``now_override`` so they need no sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
import redis
from redis.crc import key_slot

from tests.support import SCRIPTS_REDIS_URL, FakeClock
from worker.coordination.client import redis_client
from worker.errors import CoordinationError, Kind, Scope
from worker.ops.status import health_of
from worker.resilience.breaker import (
    Admission,
    Breaker,
    BreakerPolicy,
    Outcome,
    Reason,
    RecordResult,
    State,
)
from worker.resilience.limits import RatePolicy

pytestmark = pytest.mark.integration

REDIS_URL = SCRIPTS_REDIS_URL
FAIL = Outcome.failure(Kind.UNAVAILABLE, counts_as_failure=True)
OK = Outcome.ok()
FAST = BreakerPolicy(
    consecutive_failures=3,
    min_calls=100,
    base_open_s=0.3,
    min_open_s=0.1,
    max_open_s=2.0,
    state_ttl_s=30.0,
    probe_ttl_s=5.0,
)
NO_RATE = RatePolicy(rate_per_s=10_000.0, burst=10_000)
T = TypeVar("T")


def make(
    client: redis.Redis, policy: BreakerPolicy = FAST, *, now_override: FakeClock | None = None
) -> Breaker:
    """A breaker with the full-jitter draw pinned to 1 and no rate limit in the way."""
    return Breaker(
        client=client, policy=policy, rate=NO_RATE, jitter=lambda: 1.0, now_override=now_override
    )


def fail_n(b: Breaker, n: int, entity: str | None = None, outcome: Outcome = FAIL) -> None:
    for _ in range(n):
        a = b.admit("c1", entity)
        assert a.allowed
        b.record(a, outcome=outcome)


def assert_every_key_has_ttl(client: redis.Redis) -> None:
    keys = list(client.scan_iter(count=1000))
    for key in keys:
        assert client.pttl(key) > 0, key


def concurrently(n: int, fn: Callable[[], T]) -> list[T]:
    """Run ``fn`` in ``n`` threads released together; results in thread order."""
    barrier = threading.Barrier(n)
    results: dict[int, T] = {}

    def run(i: int) -> None:
        barrier.wait()
        results[i] = fn()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [results[i] for i in range(n)]


def test_closed_open_half_open_closed_and_longer_open_after_failed_probe(
    client: redis.Redis,
) -> None:
    b = make(client)
    fail_n(b, 2)
    assert b.show("c1").connection.state is State.CLOSED
    a = b.admit("c1")
    r = b.record(a, outcome=FAIL)
    (t,) = r.transitions
    assert (t.from_state, t.to_state) == (State.CLOSED, State.OPEN)
    assert t.reason == "unavailable: 3 consecutive failures"
    view = b.show("c1").connection
    assert view.until is not None and view.since is not None
    assert view.until - view.since == pytest.approx(0.3, abs=1e-5)  # jitter pinned to 1

    denied = b.admit("c1", "assets")
    assert (denied.allowed, denied.reason) == (False, Reason.OPEN)
    assert denied.until == t.until and 0 < denied.retry_in <= 0.3

    time.sleep(0.32)
    probe = b.admit("c1", "assets")
    assert probe.allowed and probe.probe and probe.probe_token
    assert probe.conn_generation == t.generation + 1  # open -> half_open bumped it
    busy = b.admit("c1", "sites")
    assert (busy.allowed, busy.reason) == (False, Reason.HALF_OPEN_BUSY)

    r = b.record(probe, outcome=FAIL)
    (t2,) = r.transitions
    assert (t2.from_state, t2.to_state) == (State.HALF_OPEN, State.OPEN)
    assert t2.reason == "unavailable: probe failed"
    view = b.show("c1").connection
    assert view.until is not None and view.since is not None
    assert view.until - view.since == pytest.approx(0.6, abs=1e-5)  # the next, longer interval

    time.sleep(0.62)
    probe = b.admit("c1")
    assert probe.probe
    r = b.record(probe, outcome=OK)
    (t3,) = r.transitions
    assert (t3.from_state, t3.to_state) == (State.HALF_OPEN, State.CLOSED)
    view = b.show("c1").connection
    assert (view.state, view.openings, view.consecutive_failures) == (State.CLOSED, 0, 0)
    assert b.admit("c1").allowed and not b.admit("c1").probe


def test_failure_rate_trips_over_the_window_and_old_buckets_fall_out(
    client: redis.Redis,
) -> None:
    clock = FakeClock()
    policy = BreakerPolicy(
        consecutive_failures=100, min_calls=4, failure_rate=0.5, bucket_s=10.0, buckets=3
    )
    b = make(client, policy, now_override=clock)
    fail_n(b, 3)  # three failures, then let them age out of the 30 s window
    clock.now += 40
    for outcome in (OK, FAIL, OK):
        a = b.admit("c1")
        assert not b.record(a, outcome=outcome).transitions
    assert b.show("c1").connection.calls == 3
    r = b.record(b.admit("c1"), outcome=FAIL)  # 2 of 4 failed
    assert [(t.from_state, t.to_state) for t in r.transitions] == [(State.CLOSED, State.OPEN)]
    assert r.connection.reason == "unavailable: 2 of 4 calls failed"


def test_stale_generation_is_ignored(client: redis.Redis) -> None:
    b = make(client)
    late = b.admit("c1", "assets")
    fail_n(b, 3)  # trips: generation 0 -> 1
    r = b.record(late, outcome=OK)
    assert r.connection.stale and r.connection.state is State.OPEN
    assert r.entity is not None and not r.entity.stale  # the entity level did not move
    b.force_close("c1")
    r = b.record(late, outcome=FAIL)
    assert r.connection.stale
    assert b.show("c1").connection.consecutive_failures == 0


def test_only_one_probe_among_20_threads(client: redis.Redis) -> None:
    b = make(client)
    b.force_open("c1", seconds=0.15, reason="test")
    time.sleep(0.2)
    results = concurrently(20, lambda: b.admit("c1", "assets"))
    granted = [a for a in results if a.allowed]
    assert len(granted) == 1 and granted[0].probe
    reasons = {a.reason for a in results if not a.allowed}
    assert reasons == {Reason.HALF_OPEN_BUSY}


def test_one_caller_sees_the_trip_among_20_threads(client: redis.Redis) -> None:
    b = make(client)
    admissions = [b.admit("c1") for _ in range(20)]
    it = iter(admissions)
    lock = threading.Lock()

    def record() -> RecordResult:
        with lock:
            a = next(it)
        return b.record(a, outcome=FAIL)

    results = concurrently(20, record)
    transitions = [t for r in results for t in r.transitions]
    assert len(transitions) == 1
    assert sum(1 for r in results if r.connection.stale) == 17


def test_exactly_one_caller_sees_the_halt(client: redis.Redis) -> None:
    b = make(client)
    results = concurrently(20, lambda: b.halt("c1", "auth: 401 AUTHENTICATION_FAILED"))
    assert sum(1 for c in results if c.transitioned) == 1
    denied = b.admit("c1", "assets")
    assert (denied.allowed, denied.reason, denied.until) == (False, Reason.HALTED, None)
    view = b.show("c1").connection
    assert (view.state, view.reason) == (State.HALTED, "auth: 401 AUTHENTICATION_FAILED")
    assert client.pttl("{cb:c1}") > 6 * 86_400_000  # halted state lives long
    assert b.resume("c1").transitioned
    assert not b.resume("c1").transitioned
    assert b.admit("c1").allowed


def test_halt_outlasts_any_open_interval_and_only_resume_ends_it(client: redis.Redis) -> None:
    clock = FakeClock()
    b = make(client, now_override=clock)
    b.halt("c1", "auth")
    clock.now += 3 * 86_400
    assert b.admit("c1").reason is Reason.HALTED


def test_pause_is_honoured_until_its_end_and_never_shortened(client: redis.Redis) -> None:
    b = make(client)
    first = b.pause("c1", 0.4, "429 RATE_LIMIT_EXCEEDED")
    assert first.transitioned
    assert not b.pause("c1", 0.1, "shorter").transitioned
    assert b.show("c1").paused_until == first.until  # not shortened
    extended = b.pause("c1", 0.5, "longer")
    assert not extended.transitioned and extended.until > first.until
    for entity in (None, "assets"):
        denied = b.admit("c1", entity)
        assert (denied.allowed, denied.reason, denied.until) == (
            False,
            Reason.PAUSED,
            extended.until,
        )
    time.sleep(max(0.0, extended.until - b.show("c1").now) + 0.02)
    assert b.admit("c1", "assets").allowed
    assert b.show("c1").paused_until is None


def test_pause_is_clamped_to_max_pause(client: redis.Redis) -> None:
    b = make(client, BreakerPolicy(max_pause_s=60.0))
    p = b.pause("c1", 10_000, "429")
    assert p.until - b.show("c1").now <= 60.0


def test_retry_after_is_a_floor_under_the_open_time(client: redis.Redis) -> None:
    b = make(client, BreakerPolicy(consecutive_failures=1, base_open_s=1.0, max_open_s=10.0))
    a = b.admit("c1")
    slow = Outcome.failure(Kind.UNAVAILABLE, counts_as_failure=True, retry_after=30.0)
    r = b.record(a, outcome=slow)
    assert r.connection.until is not None
    assert r.connection.until - b.show("c1").now >= 29.9


def test_entity_scope_opens_only_the_entity_breaker(client: redis.Redis) -> None:
    b = make(client)
    ent_fail = Outcome.failure(Kind.UNAVAILABLE, counts_as_failure=True, scope=Scope.ENTITY_TYPE)
    fail_n(b, 3, "assets", ent_fail)
    assert b.admit("c1", "assets").reason is Reason.OPEN
    assert b.admit("c1", "sites").allowed
    assert b.admit("c1").allowed
    assert b.show("c1").connection.state is State.CLOSED


def test_non_counting_failures_never_trip(client: redis.Redis) -> None:
    b = make(client)
    bad = Outcome.failure(Kind.BAD_REQUEST, counts_as_failure=False)
    fail_n(b, 10, "assets", bad)
    view = b.show("c1")
    assert view.connection.state is State.CLOSED and view.connection.calls == 0


def test_neutral_probe_outcome_releases_the_probe(client: redis.Redis) -> None:
    b = make(client)
    b.force_open("c1", seconds=0.1, reason="test")
    time.sleep(0.12)
    probe = b.admit("c1")
    assert probe.probe
    r = b.record(probe, outcome=Outcome.failure(Kind.BAD_REQUEST, counts_as_failure=False))
    assert not r.transitions and r.connection.state is State.HALF_OPEN
    cancelled = b.admit("c1")
    assert cancelled.probe
    assert not b.record(cancelled, outcome=Outcome.neutral()).transitions
    assert b.admit("c1").probe


def test_works_with_a_client_that_decodes_responses() -> None:
    decoding = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    b = make(decoding)
    b.block("c1", "assets", "403")
    r = b.record(b.admit("c1", "sites"), outcome=FAIL)
    assert not r.stale and r.entity is not None and r.entity.state is State.CLOSED
    r = b.record(b.admit("c1", "sites"), outcome=OK)
    assert not r.stale and r.connection.state is State.CLOSED
    assert b.show("c1").connection.calls == 2
    assert [lv.level for lv in b.show("c1").entity_types] == ["assets", "sites"]
    decoding.flushdb()
    decoding.close()


def test_crashed_prober_frees_the_probe_and_its_late_outcome_is_stale(
    client: redis.Redis,
) -> None:
    b = make(client, BreakerPolicy(probe_ttl_s=0.5, min_open_s=0.1, base_open_s=0.1))
    b.force_open("c1", seconds=0.1, reason="test")
    time.sleep(0.12)
    crashed = b.admit("c1")
    assert crashed.probe
    assert b.admit("c1").reason is Reason.HALF_OPEN_BUSY
    time.sleep(0.52)
    second = b.admit("c1")
    assert second.probe and second.probe_token != crashed.probe_token
    assert b.record(crashed, outcome=OK).connection.stale
    assert b.record(second, outcome=OK).transitions


def test_blocked_entity_is_reprobed_on_a_slow_schedule(client: redis.Redis) -> None:
    clock = FakeClock()
    b = make(client, BreakerPolicy(block_reprobe_s=600.0), now_override=clock)
    change = b.block("c1", "work-orders", "permission: 403 PERMISSION_DENIED")
    assert change.transitioned and change.until == clock.now + 600
    assert not b.block("c1", "work-orders", "again").transitioned
    denied = b.admit("c1", "work-orders")
    assert (denied.allowed, denied.reason) == (False, Reason.BLOCKED)
    assert b.admit("c1", "assets").allowed

    clock.now += 601
    probe = b.admit("c1", "work-orders")
    assert probe.allowed and probe.probe
    assert b.admit("c1", "work-orders").reason is Reason.BLOCKED
    denied_again = Outcome.failure(Kind.PERMISSION, counts_as_failure=True, scope=Scope.ENTITY_TYPE)
    r = b.record(probe, outcome=denied_again)
    assert r.entity is not None and r.entity.state is State.BLOCKED and not r.transitions
    assert r.entity.until == clock.now + 600

    clock.now += 601
    probe = b.admit("c1", "work-orders")
    r = b.record(probe, outcome=OK)
    assert [(t.level, t.from_state, t.to_state) for t in r.transitions] == [
        ("work-orders", State.BLOCKED, State.CLOSED)
    ]
    assert b.admit("c1", "work-orders").allowed


def test_escalation_evidence_counts_distinct_entity_types_in_window(client: redis.Redis) -> None:
    clock = FakeClock()
    b = make(client, BreakerPolicy(evidence_window_s=120.0), now_override=clock)
    perm = Outcome.failure(Kind.PERMISSION, counts_as_failure=False, scope=Scope.ENTITY_TYPE)
    other = Outcome.failure(Kind.UNAVAILABLE, counts_as_failure=True, scope=Scope.ENTITY_TYPE)

    def hit(entity: str, outcome: Outcome = perm) -> int:
        return b.record(b.admit("c1", entity), outcome=outcome).distinct_entity_types

    assert hit("assets") == 1
    assert hit("assets") == 1
    assert hit("sites", other) == 1  # another kind is another set
    clock.now += 100
    assert hit("sites") == 2
    clock.now += 30  # the first assets failure left the window
    assert hit("vendors") == 2
    assert b.record(b.admit("c1"), outcome=FAIL).distinct_entity_types == 0


def test_force_open_close_reset_and_show(client: redis.Redis) -> None:
    clock = FakeClock()
    b = make(client, now_override=clock)
    opened = b.force_open("c1", "assets", seconds=30, reason="operator")
    assert opened.transitioned and opened.until == clock.now + 30
    assert not b.force_open("c1", "assets", seconds=60, reason="longer").transitioned
    view = b.show("c1")
    (assets,) = view.entity_types
    assert (assets.level, assets.state, assets.reason) == ("assets", State.OPEN, "longer")
    assert assets.until == clock.now + 60
    closed = b.force_close("c1", "assets")
    assert closed.transitioned and closed.state is State.CLOSED
    b.halt("c1", "auth")
    b.pause("c1", 10, "429")
    assert b.reset("c1") > 0
    view = b.show("c1")
    assert view.connection.state is State.CLOSED and view.paused_until is None
    assert view.entity_types == ()
    assert set(client.scan_iter("{cb:c1}*")) <= {b"{cb:c1}:rate"}


def test_every_key_has_a_ttl_after_every_operation(client: redis.Redis) -> None:
    b = make(client)
    ent_fail = Outcome.failure(Kind.PERMISSION, counts_as_failure=True, scope=Scope.ENTITY_TYPE)
    steps: list[Callable[[], object]] = [
        lambda: b.admit("c1", "assets"),
        lambda: fail_n(b, 2, "assets"),
        lambda: fail_n(b, 1, "sites", ent_fail),
        lambda: fail_n(b, 1),
        lambda: b.admit("c1"),
        lambda: b.halt("c1", "auth"),
        lambda: b.admit("c1", "assets"),
        lambda: b.resume("c1"),
        lambda: b.pause("c1", 5, "429"),
        lambda: b.block("c1", "vendors", "403"),
        lambda: b.admit("c1", "vendors"),
        lambda: b.force_open("c1", "users", seconds=3, reason="op"),
        lambda: b.force_close("c1", "users"),
        lambda: b.unblock("c1", "vendors"),
        lambda: b.reset("c1", "assets"),
        lambda: b.show("c1"),
    ]
    for step in steps:
        step()
        assert_every_key_has_ttl(client)
    keys = list(client.scan_iter())
    assert len(keys) >= 8
    assert len({key_slot(k) for k in keys}) == 1  # one hash tag: Redis Cluster safe


def test_record_refuses_a_denied_admission(client: redis.Redis) -> None:
    b = make(client)
    b.halt("c1", "auth")
    with pytest.raises(ValueError):
        b.record(b.admit("c1"), outcome=OK)


def test_bad_names_cannot_reach_a_key(client: redis.Redis) -> None:
    b = make(client)
    with pytest.raises(ValueError):
        b.admit("c1}x", None)
    with pytest.raises(ValueError):
        b.admit("c1", "assets:probe")


def test_redis_unreachable_raises_coordination_error_quickly() -> None:
    b = Breaker(client=redis_client("redis://127.0.0.1:1/0", timeout_s=0.3, connect_timeout_s=0.3))
    started = time.monotonic()
    with pytest.raises(CoordinationError) as info:
        b.admit("c1", "assets")
    assert isinstance(info.value.__cause__, redis.RedisError)
    allowed = Admission(
        connection_id="c1", entity_type=None, allowed=True, reason=Reason.OK, until=None, retry_in=0
    )
    for call in (
        lambda: b.record(allowed, outcome=FAIL),
        lambda: b.halt("c1", "auth"),
        lambda: b.pause("c1", 1, "429"),
        lambda: b.show("c1"),
        lambda: b.reset("c1"),
    ):
        with pytest.raises(CoordinationError):
            call()
    assert time.monotonic() - started < 3.0


def test_an_entity_failure_of_a_half_open_connections_probe_reopens_it(
    client: redis.Redis,
) -> None:
    clock = FakeClock()
    b = make(client, BreakerPolicy(base_open_s=2.0, max_open_s=16.0), now_override=clock)
    b.force_open("c1", seconds=1.0, reason="offline")
    clock.now += 1.5
    probe = b.admit("c1", "assets")
    assert probe.probe
    ent_fail = Outcome.failure(Kind.UNAVAILABLE, counts_as_failure=True, scope=Scope.ENTITY_TYPE)
    r = b.record(probe, outcome=ent_fail)
    [t] = [t for t in r.transitions if t.level == "connection"]
    assert (t.from_state, t.to_state) == (State.HALF_OPEN, State.OPEN)
    # No second probe in the same spell, and the reopening backs off.
    assert b.admit("c1", "sites").reason is Reason.OPEN
    assert b.show("c1").connection.openings == 1
    # In the closed state the same failure stays with the entity type.
    b.force_close("c1")
    r = b.record(b.admit("c1", "assets"), outcome=ent_fail)
    assert r.connection.state is State.CLOSED and b.show("c1").connection.calls == 0


def test_show_many_reads_every_connection_in_a_few_round_trips(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    b = make(client, now_override=clock)
    b.halt("halted", "auth")
    b.pause("paused", 60, "rate_limited: 429")
    b.force_open("open", seconds=30, reason="unavailable")
    b.block("mixed", "vendors", "permission: 403")
    b.force_open("mixed", "assets", seconds=30, reason="5 in a row")
    entity_fail = Outcome.failure(Kind.UNAVAILABLE, counts_as_failure=True, scope=Scope.ENTITY_TYPE)
    for _ in range(2):  # failures in the entity type's window, still closed
        b.record(b.admit("mixed", "sites"), outcome=entity_fail)
    b.record(b.admit("mixed", "users"), outcome=OK)  # quiet: closed, no failure
    b.force_open("probing", "assets", seconds=1, reason="x")
    clock.now += 2
    assert b.admit("probing", "assets").probe  # half-open, the probe held
    ids = ["halted", "paused", "open", "mixed", "probing", "never-seen"]
    b.show_many(["warm-up"])  # the script is loaded once per Redis (SCRIPT LOAD)
    writes: list[int] = []  # one write per round trip (a pipeline is written at once)
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self: redis.connection.AbstractConnection, *args: object, **kw: object) -> None:
        writes.append(1)
        send(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    many = b.show_many(ids, chunk=4)
    monkeypatch.undo()

    # Two chunks of 4 and 2: a SCRIPT EXISTS and one pipeline each, not 2 per connection.
    assert len(writes) == 4, len(writes)
    for cid in ids:
        one = b.show(cid)
        view = many[cid]
        assert (view.now, view.paused_until, view.pause_reason) == (
            one.now,
            one.paused_until,
            one.pause_reason,
        )
        assert view.connection == one.connection
        # Quiet closed levels are left out; every other level is the same as show's.
        quiet = {
            level.level
            for level in one.entity_types
            if level.state is State.CLOSED
            and not level.failures
            and not level.consecutive_failures
            and not level.probe_held
        }
        assert [lv for lv in one.entity_types if lv.level not in quiet] == list(view.entity_types)
        health_one, health_many = health_of(one), health_of(view)
        for entity in ("assets", "sites", "users", "vendors", "work-orders"):
            assert health_many(entity) == health_one(entity), (cid, entity)
    assert [lv.level for lv in many["mixed"].entity_types] == ["assets", "sites", "vendors"]
    assert many["mixed"].entity_types[1].failures == 2
    assert health_of(many["probing"])("assets").state == "half-open"
    assert many["paused"].paused_until == clock() + 58
    assert set(many) == set(ids)


def test_show_many_raises_when_redis_is_away() -> None:
    away = Breaker(client=redis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.3))
    with pytest.raises(CoordinationError):
        away.show_many(["c1", "c2"])
