"""One Redis round trip per page: the folded record+admit script, on a real Redis.

``Breaker.record_and_admit`` must decide exactly as ``record`` followed by
``admit`` does; a guard that carries successes (the paging loop's) must send
one script per page. Round trips are counted with Redis MONITOR: every
command a client sent, leaving out the ones Lua scripts ran inside.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from tests.integration.breakers.test_breaker import FAIL, FAST, OK, make
from tests.support import SCRIPTS_REDIS_URL, FakeClock
from worker.coordination.scripts import in_one_round_trip
from worker.errors import Kind, Scope
from worker.resilience.breaker import Admission, Breaker, Outcome, RecordResult
from worker.resilience.classify import Where
from worker.resilience.guard import Guard, StateChange

pytestmark = pytest.mark.integration

ENT_FAIL = Outcome.failure(Kind.UNAVAILABLE, counts_as_failure=True, scope=Scope.ENTITY_TYPE)
NEUTRAL = Outcome.neutral()


def _decision(a: Admission) -> tuple[Any, ...]:
    """An admission without what differs by design (its connection id, its token)."""
    return (a.entity_type, a.allowed, a.reason, a.until, a.retry_in) + (
        a.conn_generation,
        a.entity_generation,
        a.probe,
    )


def _recorded(r: RecordResult) -> tuple[Any, ...]:
    return (r.connection, r.entity, r.distinct_entity_types)


def test_record_and_admit_decides_as_record_then_admit(client: redis.Redis) -> None:
    """Two connections, the same history: one separate calls, one the folded script."""
    clock = FakeClock()
    breaker = make(client, now_override=clock)
    steps: list[tuple[str | None, Outcome, float]] = [
        ("assets", OK, 0.1),
        ("assets", FAIL, 0.1),
        ("sites", FAIL, 0.1),
        ("assets", FAIL, 0.1),  # the third in a row trips the connection
        ("assets", OK, 0.1),  # refused: open
        ("assets", OK, 1.0),  # past the open interval: the half-open probe
        ("sites", ENT_FAIL, 0.1),
        ("sites", ENT_FAIL, 0.1),
        ("sites", ENT_FAIL, 0.1),  # trips the entity type
        ("assets", NEUTRAL, 0.1),
        (None, OK, 0.1),
        ("sites", OK, 3.0),  # the entity type's probe
        ("assets", OK, 0.1),
    ]
    held: dict[str, Admission | None] = {"separate": None, "folded": None}
    for entity, outcome, dt in steps:
        clock.now += dt
        previous_sep, previous_fold = held["separate"], held["folded"]
        if previous_sep is not None and previous_fold is not None:
            sep_record = breaker.record(previous_sep, outcome=outcome)
            sep_admit = breaker.admit("sep", entity)
            fold_record, fold_admit = breaker.record_and_admit(
                previous_fold, outcome=outcome, entity_type=entity
            )
            assert _recorded(fold_record) == _recorded(sep_record)
        else:
            assert previous_sep is None and previous_fold is None
            sep_admit = breaker.admit("sep", entity)
            fold_admit = breaker.admit("fold", entity)
        assert _decision(fold_admit) == _decision(sep_admit)
        held["separate"] = sep_admit if sep_admit.allowed else None
        held["folded"] = fold_admit if fold_admit.allowed else None
    assert breaker.show("sep").connection.state == breaker.show("fold").connection.state


def test_record_and_admit_sees_a_pause_set_after_the_previous_admission(
    client: redis.Redis,
) -> None:
    breaker = make(client)
    first = breaker.admit("c1", "assets")
    assert first.allowed
    breaker.pause("c1", 5.0, "429 on sites")
    _, admission = breaker.record_and_admit(first, outcome=OK, entity_type="assets")
    assert not admission.allowed
    assert admission.reason.value == "paused"


@contextmanager
def monitored(url: str, waker: redis.Redis) -> Iterator[list[str]]:
    """The names of the commands clients send (MONITOR), Lua's own left out.

    ``waker`` (a client already connected, so it sends no handshake) ends the
    watch with an ECHO that is not counted.
    """
    seen: list[str] = []
    watcher = redis.Redis.from_url(url)
    ready = threading.Event()

    def watch() -> None:
        with watcher.monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                if command.get("client_type") == "lua":
                    continue
                name = str(command["command"]).split(" ", 1)[0].upper()
                if name == "ECHO":
                    return
                seen.append(name)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield seen
    finally:
        waker.echo("done")
        thread.join(5)
        watcher.close()


def _pages(breaker: Breaker, connection_id: str, pages: int, *, carry: bool) -> None:
    changes: list[StateChange] = []
    guard = Guard(
        breaker=breaker,
        connection_id=connection_id,
        entity_types_synced=2,
        on_transition=changes.append,
        carry_successes=carry,
    )
    fetch: Callable[[], str] = lambda: "page"  # noqa: E731
    guard.call(None, Where.STATUS, fetch)  # the preflight, carried into the first page
    for _ in range(pages):
        guard.call("assets", Where.LIST, fetch)
    last = guard.carried_record()  # what the runner sends with the slot's release
    if last is not None:
        in_one_round_trip(breaker.redis, [last])
    assert changes == []


def test_a_guard_that_carries_successes_makes_one_round_trip_per_request(
    client: redis.Redis,
) -> None:
    client.close()
    breaker = make(redis.Redis.from_url(SCRIPTS_REDIS_URL))
    _pages(breaker, "warm", 2, carry=True)  # loads every script once
    _pages(breaker, "warm", 2, carry=False)
    with monitored(SCRIPTS_REDIS_URL, breaker.redis) as carried:
        _pages(breaker, "c1", 10, carry=True)
    with monitored(SCRIPTS_REDIS_URL, breaker.redis) as separate:
        _pages(breaker, "c2", 10, carry=False)
    # 11 requests: one admission alone, ten folded with a record, one last record.
    assert carried == ["EVALSHA"] * 12
    assert separate == ["EVALSHA"] * 22
    # Every outcome was counted, carried or not.
    for connection_id in ("c1", "c2"):
        view = breaker.show(connection_id)
        assert view.connection.calls == 11
        assert [level.calls for level in view.entity_types] == [10]


def test_a_carried_success_of_a_probe_is_not_carried(client: redis.Redis) -> None:
    """A half-open level's probe closes it at once, not at the next admission."""
    clock = FakeClock()
    breaker = make(client, now_override=clock)
    for _ in range(FAST.consecutive_failures):
        a = breaker.admit("c1", "assets")
        breaker.record(a, outcome=FAIL)
    clock.now += FAST.max_open_s + 0.1
    changes: list[StateChange] = []
    guard = Guard(
        breaker=breaker,
        connection_id="c1",
        entity_types_synced=2,
        on_transition=changes.append,
        carry_successes=True,
    )
    guard.call("assets", Where.LIST, lambda: "page")
    assert [c.to_state.value for c in changes] == ["closed"]
    assert breaker.show("c1").connection.state.value == "closed"


def test_a_script_is_sent_whole_once_then_by_its_sha(client: redis.Redis) -> None:
    """No NOSCRIPT and SCRIPT LOAD round trips on first use; a flushed Redis is served."""
    client.script_flush()
    client.close()
    fresh = redis.Redis.from_url(SCRIPTS_REDIS_URL)
    fresh.ping()
    breaker = make(fresh)
    with monitored(SCRIPTS_REDIS_URL, breaker.redis) as sent:
        breaker.admit("c1", "assets")
        breaker.admit("c1", "assets")
    assert sent == ["EVAL", "EVALSHA"]
    fresh.script_flush()
    with monitored(SCRIPTS_REDIS_URL, breaker.redis) as sent:
        assert breaker.admit("c1", "assets").allowed
    assert sent == ["EVALSHA", "EVAL"]  # NOSCRIPT, then sent whole
