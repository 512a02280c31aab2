"""The guard, table-driven, on the in-memory breaker (no Redis, no HTTP).

``MemoryBreaker`` is the model ``tests/integration/breakers/test_breaker_model.py``
checks against the Lua scripts, so what these rows assert of the guard holds
on the real breaker too. Each row: what one upstream call raised, where, and
what the guard must answer (the exception the task sees) and record (the
transitions it reports).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness.testing.memory_breaker import MemoryBreaker
from worker.errors import (
    AuthFailed,
    BadRequest,
    BadResponse,
    Blocked,
    Deferred,
    Halted,
    NotSupported,
    PermissionDenied,
    RateLimited,
    RetryLater,
    Unavailable,
    UpstreamError,
)
from worker.resilience.breaker import BreakerPolicy
from worker.resilience.breaker_types import Actor, State
from worker.resilience.classify import Where
from worker.resilience.guard import Guard, StateChange

POLICY = BreakerPolicy(consecutive_failures=3, min_calls=10, base_open_s=5.0)
NOW = 1_000_000.0


class Harness:
    def __init__(self, entity_types_synced: int = 3) -> None:
        self.now = NOW
        self.breaker = MemoryBreaker(POLICY, now=lambda: self.now, jitter=lambda: 1.0)
        self.changes: list[StateChange] = []
        self.guard = Guard(
            breaker=self.breaker,  # type: ignore[arg-type]
            connection_id="acme",
            entity_types_synced=entity_types_synced,
            on_transition=self.changes.append,
            sleep=lambda _s: None,
        )

    def call(self, entity: str | None, error: Exception | None, where: Where = Where.LIST) -> Any:
        def fn() -> str:
            if error is not None:
                raise error
            return "page"

        return self.guard.call(entity, where, fn)

    def moves(self) -> list[tuple[str | None, State, State]]:
        return [(c.entity_type, c.from_state, c.to_state) for c in self.changes]


ROWS: list[tuple[str, Callable[[], Exception], type[BaseException], list[Any]]] = [
    (
        "401 halts the connection",
        lambda: AuthFailed("token expired", status=401),
        Halted,
        [(None, State.CLOSED, State.HALTED)],
    ),
    (
        "429 pauses the connection",
        lambda: RateLimited("slow down", status=429, retry_after=12.0),
        Deferred,
        [(None, State.CLOSED, State.PAUSED)],
    ),
    (
        "403 on a list blocks the entity type only",
        lambda: PermissionDenied("no", status=403),
        Blocked,
        [("assets", State.CLOSED, State.BLOCKED)],
    ),
    (
        "404 on a list blocks the entity type only",
        lambda: NotSupported("no such list", status=404),
        Blocked,
        [("assets", State.CLOSED, State.BLOCKED)],
    ),
    ("one 503 is retried, nothing moves", lambda: Unavailable("503", status=503), RetryLater, []),
    ("bad data is retried", lambda: BadResponse("not JSON"), RetryLater, []),
    ("400 fails the job, nothing moves", lambda: BadRequest("bad", status=400), BadRequest, []),
]


@pytest.mark.parametrize(
    ("error", "raised", "moves"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_one_failure(
    error: Callable[[], Exception], raised: type[BaseException], moves: list[Any]
) -> None:
    h = Harness()
    with pytest.raises(raised):
        h.call("assets", error())
    assert h.moves() == moves
    assert all(c.actor is Actor.WORKER for c in h.changes)
    assert all(c.cause is not None for c in h.changes)


def test_a_success_passes_the_value_through_and_moves_nothing() -> None:
    h = Harness()
    assert h.call("assets", None) == "page"
    assert h.changes == []


def test_consecutive_failures_open_the_entity_breaker_then_calls_are_deferred() -> None:
    h = Harness()
    raised = []
    for _ in range(POLICY.consecutive_failures):
        with pytest.raises((RetryLater, Deferred)) as info:
            h.call("assets", Unavailable("503", status=503))
        raised.append(info.type)
    # A list failure stays with its entity type: that breaker trips, the
    # connection's does not; the call that tripped it is deferred, not retried.
    assert raised == [RetryLater, RetryLater, Deferred]
    assert h.moves() == [("assets", State.CLOSED, State.OPEN)]
    assert h.call("work-orders", None) == "page"
    with pytest.raises(Deferred):
        h.call("assets", None)


def test_an_open_breaker_half_opens_and_one_success_closes_it() -> None:
    h = Harness()
    for _ in range(POLICY.consecutive_failures):
        with pytest.raises((RetryLater, Deferred)):
            h.call("assets", Unavailable("503", status=503))
    h.now += POLICY.max_open_s + 1
    assert h.call("assets", None) == "page"
    assert h.moves()[-1][2] is State.CLOSED


def test_a_halted_connection_admits_nothing() -> None:
    h = Harness()
    with pytest.raises(Halted):
        h.call("assets", AuthFailed("expired", status=401))
    with pytest.raises(Halted):
        h.call("work-orders", None)
    assert h.moves() == [(None, State.CLOSED, State.HALTED)]


def test_a_paused_connection_defers_every_entity_type_until_retry_after() -> None:
    h = Harness()
    with pytest.raises(Deferred) as first:
        h.call("assets", RateLimited("slow", status=429, retry_after=30.0))
    assert first.value.until == pytest.approx(NOW + 30.0)
    with pytest.raises(Deferred):
        h.call("work-orders", None)
    h.now += 31
    assert h.call("work-orders", None) == "page"


def test_403_on_every_entity_type_escalates_to_a_connection_halt() -> None:
    h = Harness(entity_types_synced=2)
    with pytest.raises(Blocked):
        h.call("assets", PermissionDenied("no", status=403))
    with pytest.raises(Halted):
        h.call("work-orders", PermissionDenied("no", status=403))
    assert (None, State.CLOSED, State.HALTED) in h.moves()


def test_a_failure_of_the_status_endpoint_reaches_the_connection() -> None:
    h = Harness()
    with pytest.raises(Halted):
        h.call(None, PermissionDenied("no", status=403), where=Where.STATUS)
    assert h.moves() == [(None, State.CLOSED, State.HALTED)]


def test_our_own_exception_is_neutral_and_frees_a_probe() -> None:
    h = Harness()
    for _ in range(POLICY.consecutive_failures):
        with pytest.raises((RetryLater, Deferred)):
            h.call(None, Unavailable("503", status=503))
    h.now += POLICY.max_open_s + 1
    with pytest.raises(ZeroDivisionError):
        h.call(None, ZeroDivisionError("our bug"))
    # The probe was released: the next caller may probe and close the breaker.
    assert h.call(None, None) == "page"
    assert h.moves()[-1] == (None, State.HALF_OPEN, State.CLOSED)


def test_every_row_names_an_upstream_error() -> None:
    assert all(isinstance(row[1](), UpstreamError) for row in ROWS)
