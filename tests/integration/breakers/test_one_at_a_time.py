"""After a 429 a connection runs one request at a time, on a real Redis.

A request sent beside another lands inside the next Retry-After window when
that other meets a 429 (bench section 3). So after a 429 pauses a connection,
its entity types take turns, one request in flight, until a full window more
passes without a 429; other connections are not affected.
"""

from __future__ import annotations

import pytest
import redis

from tests.integration.breakers.test_breaker import OK, make
from tests.support import FakeClock
from worker.errors import Deferred, Kind, RateLimited
from worker.resilience.breaker import Breaker, Outcome, Reason
from worker.resilience.classify import Where
from worker.resilience.guard import Guard, StateChange

pytestmark = pytest.mark.integration

TOO_MANY = Outcome.failure(Kind.RATE_LIMITED, counts_as_failure=False, retry_after=2.0)


def test_after_a_429_the_entity_types_of_a_connection_take_turns(client: redis.Redis) -> None:
    clock = FakeClock()
    breaker = make(client, now_override=clock)
    first = breaker.admit("c1", "assets")
    beside = breaker.admit("c1", "sites")
    assert first.allowed and beside.allowed  # before any 429: side by side
    assert first.in_flight_token is None

    breaker.record(first, outcome=TOO_MANY)
    breaker.pause("c1", 2.0, "429", met_by=first)
    assert breaker.admit("c1", "sites").reason is Reason.PAUSED
    breaker.record(beside, outcome=OK)

    clock.now += 2.1  # the pause is over; one at a time for 2 s more
    turn = breaker.admit("c1", "assets")
    assert turn.allowed and turn.in_flight_token is not None
    waiting = breaker.admit("c1", "sites")
    assert waiting.reason is Reason.ONE_AT_A_TIME
    assert 0 < waiting.retry_in < 1
    healthy = [breaker.admit("c2", e) for e in ("assets", "sites", "assets")]
    assert all(a.allowed and a.in_flight_token is None for a in healthy)

    breaker.record(turn, outcome=OK)
    turn = breaker.admit("c1", "sites")
    assert turn.allowed
    assert breaker.admit("c1", "assets").reason is Reason.ONE_AT_A_TIME

    # A 429 of the one in flight: nothing is admitted between its record and
    # its pause, and the pause frees its place.
    breaker.record(turn, outcome=TOO_MANY)
    assert breaker.admit("c1", "assets").reason is Reason.ONE_AT_A_TIME
    breaker.pause("c1", 2.0, "429", met_by=turn)
    assert breaker.admit("c1", "assets").reason is Reason.PAUSED

    clock.now += 2.1
    turn = breaker.admit("c1", "assets")
    assert turn.allowed and turn.in_flight_token is not None
    breaker.record(turn, outcome=OK)

    clock.now += 2.0  # a full window without a 429 since the pause ended
    both = [breaker.admit("c1", "assets"), breaker.admit("c1", "sites")]
    assert all(a.allowed and a.in_flight_token is None for a in both)


def test_a_folded_admission_sees_the_one_in_flight(client: redis.Redis) -> None:
    clock = FakeClock()
    breaker = make(client, now_override=clock)
    breaker.pause("c1", 1.0, "429")
    clock.now += 1.1
    turn = breaker.admit("c1", "assets")
    other = breaker.admit("c1", "sites")
    assert other.reason is Reason.ONE_AT_A_TIME
    # The other entity type's last success carried into its next admission:
    # the record goes through, the admission still waits its turn.
    earlier = breaker.admit("c2", "sites")
    _, folded = breaker.record_and_admit(earlier, outcome=OK, entity_type="sites")
    assert folded.allowed  # c2 runs side by side
    breaker.record(turn, outcome=OK)
    _, folded = breaker.record_and_admit(folded, outcome=OK, entity_type="sites")
    assert folded.allowed


def _guard(breaker: Breaker, connection_id: str, sleeps: list[float]) -> Guard:
    changes: list[StateChange] = []
    return Guard(
        breaker=breaker,
        connection_id=connection_id,
        entity_types_synced=2,
        on_transition=changes.append,
        carry_successes=True,
        max_rate_wait_s=0.2,
        sleep=sleeps.append,
    )


def test_a_guard_waits_its_turn_then_parks(client: redis.Redis) -> None:
    """While another request is in flight the guard waits in place, briefly."""
    clock = FakeClock()
    breaker = make(client, now_override=clock)

    def too_many() -> str:
        raise RateLimited("slow down", status=429, retry_after=1.0)

    sleeps: list[float] = []
    assets, sites = _guard(breaker, "c1", sleeps), _guard(breaker, "c1", sleeps)
    with pytest.raises(Deferred):
        assets.call("assets", Where.LIST, too_many)
    clock.now += 1.1
    held = breaker.admit("c1", "assets")  # another worker's request in flight
    assert held.in_flight_token is not None
    with pytest.raises(Deferred, match="one_at_a_time"):
        sites.call("sites", Where.LIST, lambda: "page")
    assert sleeps and sum(sleeps) <= 0.2
    breaker.record(held, outcome=OK)
    assert sites.call("sites", Where.LIST, lambda: "page") == "page"
    # Admitted one at a time, its success was recorded at once: the turn is free.
    assert breaker.admit("c1", "assets").allowed
