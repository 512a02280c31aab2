"""Model-based test: random sequences of breaker operations against real Redis
(DB 15) agree, step by step, with a small Python model of the state machine
(``harness.testing.memory_breaker.Model``, which the fast guard tests run on
as ``MemoryBreaker``: this test is what keeps them honest).

Time: Redis TIME cannot be faked, so every script takes an optional clock
override (ARGV[1]; ``Breaker(now_override=...)``), empty in production. The
test drives a fake clock with explicit ``advance`` steps; that is cleaner than
rewriting stored ``until`` values (which would couple the test to the storage
layout) and lets one example cover hours of breaker life in milliseconds. The
keys' real TTLs stay far longer than an example runs, and the probe token
carries its own expiry in its value, so expiry follows the fake clock too.

The jitter draw is chosen by Hypothesis per ``record`` and given to both sides;
stored times are rounded to microseconds as the scripts store them.
"""

from __future__ import annotations

import os
import uuid

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from harness.testing.memory_breaker import Model
from tests.support import SCRIPTS_REDIS_URL
from worker.errors import Kind, Scope
from worker.resilience.breaker import (
    Admission,
    Breaker,
    BreakerPolicy,
    Outcome,
)
from worker.resilience.limits import RatePolicy

pytestmark = pytest.mark.integration

# DB 15 on the test Redis: these tests flush it, and only it.
REDIS_URL = SCRIPTS_REDIS_URL
ENTITIES = ("a", "b")
# "a" twice: more calls hit the same entity breaker, so it trips and recovers.
ENTITY_CHOICES = st.sampled_from([None, "a", "a", "b"])
POLICY = BreakerPolicy(
    consecutive_failures=3,
    min_calls=4,
    failure_rate=0.5,
    bucket_s=10.0,
    buckets=3,
    base_open_s=2.0,
    min_open_s=1.0,
    max_open_s=16.0,
    state_ttl_s=600.0,
    probe_ttl_s=60.0,
    block_reprobe_s=100.0,
    max_pause_s=50.0,
)
OUTCOMES = {
    "ok": Outcome.ok(),
    "conn_fail": Outcome.failure(Kind.UNAVAILABLE, counts_as_failure=True),
    "conn_fail_retry_after": Outcome.failure(
        Kind.UNAVAILABLE, counts_as_failure=True, retry_after=30.0
    ),
    "entity_fail": Outcome.failure(
        Kind.PERMISSION, counts_as_failure=True, scope=Scope.ENTITY_TYPE
    ),
    "neutral": Outcome.failure(Kind.BAD_REQUEST, counts_as_failure=False),
}


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.client = redis.Redis.from_url(REDIS_URL)
        self.client.flushdb()
        self.now = 1_000_000.0
        self.jitter = 1.0
        self.cid = uuid.uuid4().hex[:12]
        self.breaker = Breaker(
            client=self.client,
            policy=POLICY,
            rate=RatePolicy(rate_per_s=1e6, burst=1_000_000),
            jitter=lambda: self.jitter,
            now_override=lambda: self.now,
        )
        self.model = Model(POLICY)
        for entity in ENTITIES:
            self.model.ents[entity]  # every level the scripts may show
        self.outstanding: list[Admission] = []

    def teardown(self) -> None:
        self.client.flushdb()
        self.client.close()

    @rule(entity=ENTITY_CHOICES)
    def admit(self, entity: str | None) -> None:
        self._admit(entity)

    @rule(
        entity=ENTITY_CHOICES,
        name=st.sampled_from(sorted(OUTCOMES)),
        jitter=st.floats(min_value=0.0, max_value=1.0),
    )
    def admit_and_record(self, entity: str | None, name: str, jitter: float) -> None:
        """The common path, so that breakers actually trip and recover."""
        if self._admit(entity):
            self._record(len(self.outstanding) - 1, name, jitter)

    @rule(data=st.data())
    def operate(self, data: st.DataObject) -> None:
        """One operator or upstream-driven transition (rarer than calls)."""
        op = data.draw(
            st.sampled_from(["halt", "resume", "open", "close", "block", "unblock", "pause"])
        )
        entity = data.draw(ENTITY_CHOICES)
        named = entity or ENTITIES[0]
        if op == "halt":
            self.halt()
        elif op == "resume":
            self.force_close(None)
        elif op == "open":
            self.force_open(entity, data.draw(st.sampled_from([1.0, 10.0, 100.0])))
        elif op == "close":
            self.force_close(entity)
        elif op == "block":
            self.block(named)
        elif op == "unblock":
            self.unblock(named)
        else:
            self.pause(data.draw(st.sampled_from([5.0, 20.0, 500.0])))

    def _admit(self, entity: str | None) -> bool:
        real = self.breaker.admit(self.cid, entity)
        reason, probe = self.model.admit(entity, self.now)
        assert (real.reason, real.probe) == (reason, probe)
        if real.allowed:
            assert real.conn_generation == self.model.conn.gen
            if entity:
                assert real.entity_generation == self.model.ents[entity].gen
            self.model.grant(real, self.now)
            self.outstanding.append(real)
        return real.allowed

    @precondition(lambda self: self.outstanding)
    @rule(
        data=st.data(),
        name=st.sampled_from(sorted(OUTCOMES)),
        jitter=st.floats(min_value=0.0, max_value=1.0),
    )
    def record(self, data: st.DataObject, name: str, jitter: float) -> None:
        self._record(data.draw(st.integers(0, len(self.outstanding) - 1)), name, jitter)

    def _record(self, index: int, name: str, jitter: float) -> None:
        adm = self.outstanding.pop(index)
        out = OUTCOMES[name]
        self.jitter = jitter
        real = self.breaker.record(adm, outcome=out)
        (stale, frm), ent = self.model.record(adm, out, jitter, self.now)
        assert real.connection.stale == stale
        assert (
            real.connection.transition.from_state if real.connection.transition else None
        ) == frm
        if adm.entity_type:
            assert ent is not None
            stale, frm = ent
            assert real.entity is not None and real.entity.stale == stale
            assert (real.entity.transition.from_state if real.entity.transition else None) == frm

    @rule(dt=st.sampled_from([0.25, 1.0, 4.0, 20.0, 70.0, 200.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(data=st.data(), offset=st.sampled_from([-0.5, -0.001, 0.0, 0.001]))
    def advance_to_a_deadline(self, data: st.DataObject, offset: float) -> None:
        """Jump to just before, at or just after an until, probe expiry or pause end:
        off-by-a-little bugs live at those boundaries."""
        m = self.model
        levels = [m.conn, *m.ents.values()]
        deadlines = [lv.till for lv in levels] + [lv.probe[1] for lv in levels if lv.probe]
        later = sorted({t + offset for t in [*deadlines, m.pause_until] if t + offset > self.now})
        if later:
            self.now = data.draw(st.sampled_from(later))

    def halt(self) -> None:
        change = self.breaker.halt(self.cid, "auth: 401")
        assert change.transitioned == self.model.halt("auth: 401", self.now)

    def force_close(self, entity: str | None) -> None:
        change = self.breaker.force_close(self.cid, entity, reason="op close")
        assert change.transitioned == self.model.force_close(entity, "op close", self.now)

    def force_open(self, entity: str | None, seconds: float) -> None:
        change = self.breaker.force_open(self.cid, entity, seconds=seconds, reason="op open")
        assert change.transitioned == self.model.force_open(entity, seconds, "op open", self.now)

    def block(self, entity: str) -> None:
        change = self.breaker.block(self.cid, entity, "permission: 403")
        assert change.transitioned == self.model.block(entity, "permission: 403", self.now)

    def unblock(self, entity: str) -> None:
        change = self.breaker.unblock(self.cid, entity, "unblocked")
        assert change.transitioned == self.model.unblock(entity, "unblocked", self.now)

    def pause(self, seconds: float) -> None:
        change = self.breaker.pause(self.cid, seconds, "429")
        assert change.transitioned == self.model.pause(seconds, "429", self.now)
        assert change.until == self.model.pause_until

    @invariant()
    def stored_state_matches_the_model(self) -> None:
        view = self.breaker.show(self.cid)
        shown = {lv.level: lv for lv in (view.connection, *view.entity_types)}
        expected = {"connection": self.model.conn, **self.model.ents}
        for name, lv in expected.items():
            got = shown.get(name)
            if got is None:  # never written: a fresh closed breaker
                assert (lv.state, lv.gen, lv.consec, lv.openings) == ("closed", 0, 0, 0), name
                continue
            assert (got.state.value, got.generation, got.reason) == (lv.state, lv.gen, lv.reason)
            assert (got.openings, got.consecutive_failures) == (lv.openings, lv.consec), name
            assert got.until == (lv.till if lv.till > 0 else None), name
            assert (got.calls, got.failures) == lv.counts(self.now), name
            assert got.probe_held == (lv.holder(self.now) is not None), name
        paused = self.model.pause_until if self.model.pause_until > self.now else None
        assert view.paused_until == paused


def test_breaker_matches_model() -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    assert client.connection_pool.connection_kwargs.get("db") == 15
    client.ping()  # fails, never skips, when Redis is down
    client.close()
    run_state_machine_as_test(
        BreakerMachine,
        settings=settings(
            max_examples=int(os.environ.get("BREAKER_MODEL_EXAMPLES", "40")),
            stateful_step_count=60,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
