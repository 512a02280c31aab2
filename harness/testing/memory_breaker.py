"""The breaker's rules in memory: the model the Lua scripts are checked against.

``Model`` restates the state machine of ``worker.resilience.breaker`` (one
level per connection and per entity type, probe tokens, the failure-rate
window, generations, the pause). ``tests/integration/breakers/test_breaker_model.py``
runs random operation sequences against the real scripts on Redis and this
model and asserts they agree step by step, which keeps ``MemoryBreaker``, the
same model behind the ``Breaker`` methods the guard calls, honest: the
fast ``Guard`` tests (``tests/unit/resilience/test_guard.py``) run on it.

Times are rounded to microseconds as the scripts store them. The clock and
the jitter draw are given (``now``, ``jitter``), as the scripts' test hooks
take them. Escalation evidence (``RecordResult.distinct_entity_types``) is
kept here too; the model test does not compare it, the guard tests do.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.errors import Kind, Scope
from worker.resilience.breaker import BreakerPolicy, open_interval
from worker.resilience.breaker_types import (
    Admission,
    Change,
    LevelResult,
    Outcome,
    PauseChange,
    Reason,
    RecordResult,
    State,
    Transition,
    level_effects,
)


def rnd(x: float) -> float:
    """Times as the scripts store them (microseconds)."""
    return float(f"{x:.6f}")


@dataclass
class Level:
    """One breaker level: connection or entity type."""

    policy: BreakerPolicy
    state: str = "closed"
    till: float = 0.0
    reason: str = ""
    gen: int = 0
    openings: int = 0
    consec: int = 0
    probe: tuple[str, float] | None = None  # token, expiry
    window: dict[int, list[int]] = field(default_factory=dict)  # bucket -> [calls, fails]

    def move(self, to: str, till: float, now: float, reason: str | None = None) -> str:
        frm = self.state
        self.state, self.till, self.gen, self.consec = to, rnd(till), self.gen + 1, 0
        self.reason = self.reason if reason is None else reason
        self.probe, self.window = None, {}
        return frm

    def holder(self, now: float) -> str | None:
        return self.probe[0] if self.probe and self.probe[1] > now else None

    def counts(self, now: float) -> tuple[int, int]:
        oldest = math.floor(now / self.policy.bucket_s) - self.policy.buckets
        live = [v for b, v in self.window.items() if b > oldest]
        return sum(v[0] for v in live), sum(v[1] for v in live)


class Model:
    """The breaker's rules, written again from the breaker module's docstring."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self.conn = Level(policy)
        self.ents: dict[str, Level] = defaultdict(lambda: Level(policy))
        self.pause_until = 0.0
        self.pause_reason = ""
        # One request at a time after a 429 (one_at_a_time.lua): until when,
        # and the request in flight with its expiry.
        self.single_until = 0.0
        self.in_flight: tuple[str, float] | None = None

    def _check(self, lv: Level, now: float) -> tuple[Reason | None, bool]:
        if lv.state == "open":
            if lv.till > now:
                return Reason.OPEN, False
            lv.move("half_open", now, now)
        if lv.state == "blocked":
            if lv.till > now or lv.holder(now):
                return Reason.BLOCKED, False
            return None, True
        if lv.state == "half_open":
            return (Reason.HALF_OPEN_BUSY, False) if lv.holder(now) else (None, True)
        return None, False

    def admit(self, entity: str | None, now: float) -> tuple[Reason, bool]:
        if self.conn.state == "halted":
            return Reason.HALTED, False
        if self.pause_until > now:
            return Reason.PAUSED, False
        denial, conn_probe = self._check(self.conn, now)
        if denial:
            return denial, False
        ent_probe = False
        if entity is not None:
            denial, ent_probe = self._check(self.ents[entity], now)
            if denial:
                return denial, False
        if self.single_until > now and self.in_flight and self.in_flight[1] > now:
            return Reason.ONE_AT_A_TIME, False
        return Reason.OK, conn_probe or ent_probe

    def grant(self, adm: Admission, now: float) -> None:
        levels = [self.conn] + ([self.ents[adm.entity_type]] if adm.entity_type else [])
        for lv in levels:
            if lv.state in ("half_open", "blocked") and adm.probe_token:
                lv.probe = (adm.probe_token, rnd(now + self.policy.probe_ttl_s))
        if adm.in_flight_token:
            self.in_flight = (adm.in_flight_token, rnd(now + self.policy.probe_ttl_s))

    def single_free(self, now: float) -> bool:
        """Whether an admission now would be the one request in flight (after a 429)."""
        return self.single_until > now

    def end_in_flight(self, token: str | None) -> None:
        if token and self.in_flight and self.in_flight[0] == token:
            self.in_flight = None

    def record_level(
        self,
        lv: Level,
        gen: int,
        token: str | None,
        effect: str,
        out: Outcome,
        j: float,
        now: float,
    ) -> tuple[bool, str | None]:
        """(stale, the state it left when this outcome moved it)."""
        kind = out.kind.value if out.kind else "success"
        if lv.gen != gen:
            return True, None
        frm = None

        def trip(reason: str) -> str:
            iv = open_interval(
                self.policy, openings=lv.openings, jitter=j, retry_after=out.retry_after
            )
            lv.openings += 1
            return lv.move("open", now + iv, now, reason)

        if lv.state in ("half_open", "blocked"):
            holder = lv.holder(now)
            if token is None or (holder is not None and holder != token):
                return True, None
            lv.probe = None
            if effect == "success":
                lv.openings = 0
                frm = lv.move("closed", 0.0, now, "")
            elif effect == "failure" and lv.state == "half_open":
                frm = trip(f"{kind}: probe failed")
            elif effect == "failure":
                lv.till = rnd(now + self.policy.block_reprobe_s)
        elif lv.state == "closed":
            if effect == "neutral":
                return False, None
            bucket = lv.window.setdefault(math.floor(now / self.policy.bucket_s), [0, 0])
            bucket[0] += 1
            bucket[1] += effect == "failure"
            calls, fails = lv.counts(now)
            if effect == "success":
                lv.consec = 0
            else:
                lv.consec += 1
                if lv.consec >= self.policy.consecutive_failures:
                    frm = trip(f"{kind}: {lv.consec} consecutive failures")
                elif calls >= self.policy.min_calls and fails >= self.policy.failure_rate * calls:
                    frm = trip(f"{kind}: {fails} of {calls} calls failed")
        else:
            return True, None
        return False, frm

    def record(
        self, adm: Admission, out: Outcome, jitter: float, now: float
    ) -> tuple[tuple[bool, str | None], tuple[bool, str | None] | None]:
        """Apply an outcome to both levels: ((stale, from), (stale, from) or None)."""
        conn_fx, ent_fx = level_effects(out, has_entity=adm.entity_type is not None)
        if (conn_fx, ent_fx) == ("neutral", "failure") and self.conn.state == "half_open":
            conn_fx = "failure"  # a half-open connection's probe failed its trial
        conn = self.record_level(
            self.conn, adm.conn_generation, adm.probe_token, conn_fx, out, jitter, now
        )
        if out.kind is not Kind.RATE_LIMITED:
            self.end_in_flight(adm.in_flight_token)  # a 429's pause frees it instead
        if not adm.entity_type:
            return conn, None
        lv = self.ents[adm.entity_type]
        ent = self.record_level(
            lv, adm.entity_generation, adm.probe_token, ent_fx, out, jitter, now
        )
        return conn, ent

    # -- direct transitions: what the scripts' set_state and pause do ---------------

    def halt(self, reason: str, now: float) -> bool:
        moved = self.conn.state != "halted"
        if moved:
            self.conn.move("halted", 0.0, now, reason)
        return moved

    def force_close(self, entity: str | None, reason: str, now: float) -> bool:
        lv = self.ents[entity] if entity else self.conn
        moved = lv.state != "closed"
        if moved:
            lv.openings = 0
            lv.move("closed", 0.0, now, reason)
        return moved

    def force_open(self, entity: str | None, seconds: float, reason: str, now: float) -> bool:
        lv = self.ents[entity] if entity else self.conn
        moved = lv.state != "open"
        if moved:
            lv.move("open", now + seconds, now, reason)
        else:
            lv.till, lv.reason = rnd(now + seconds), reason
        return moved

    def block(self, entity: str, reason: str, now: float) -> bool:
        lv = self.ents[entity]
        moved = lv.state != "blocked"
        if moved:
            lv.move("blocked", now + self.policy.block_reprobe_s, now, reason)
        else:
            lv.till = max(lv.till, rnd(now + self.policy.block_reprobe_s))
        return moved

    def unblock(self, entity: str, reason: str, now: float) -> bool:
        lv = self.ents[entity]
        moved = lv.state == "blocked"
        if moved:
            lv.openings = 0
            lv.move("closed", 0.0, now, reason)
        return moved

    def pause(self, seconds: float, reason: str, now: float, token: str | None = None) -> bool:
        active = self.pause_until > now
        seconds = min(seconds, self.policy.max_pause_s)
        till = now + seconds
        self.single_until = max(self.single_until, rnd(max(till, self.pause_until) + seconds))
        self.end_in_flight(token)
        if not (active and self.pause_until >= till):
            self.pause_until = rnd(till)
            self.pause_reason = reason
        return not active


class MemoryBreaker:
    """The ``Breaker`` methods the guard calls, over ``Model`` (no Redis).

    ``now`` and ``jitter`` stand in for Redis TIME and the jitter draw. Rate
    limits are not modelled (every call is within the rate).
    """

    def __init__(
        self,
        policy: BreakerPolicy | None = None,
        *,
        now: Callable[[], float] = lambda: 1_000_000.0,
        jitter: Callable[[], float] = lambda: 1.0,
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self.model = Model(self.policy)
        self._now = now
        self._jitter = jitter
        self._evidence: dict[Kind, dict[str, float]] = defaultdict(dict)

    def jitter(self) -> float:
        return self._jitter()

    def admit(self, connection_id: str, entity_type: str | None = None) -> Admission:
        now = self._now()
        reason, probe = self.model.admit(entity_type, now)
        allowed = reason is Reason.OK
        until = None if allowed else self._until(reason, entity_type, now)
        retry_in = max(0.0, (until or now) - now)
        if reason is Reason.ONE_AT_A_TIME:
            retry_in = self.policy.one_at_a_time_poll_s
        admission = Admission(
            connection_id=connection_id,
            entity_type=entity_type,
            allowed=allowed,
            reason=reason,
            until=until,
            retry_in=retry_in,
            conn_generation=self.model.conn.gen,
            entity_generation=self.model.ents[entity_type].gen if entity_type else 0,
            probe=probe,
            probe_token=uuid.uuid4().hex if probe else None,
            in_flight_token=uuid.uuid4().hex if allowed and self.model.single_free(now) else None,
        )
        if allowed:
            self.model.grant(admission, now)
        return admission

    def _until(self, reason: Reason, entity_type: str | None, now: float) -> float | None:
        if reason is Reason.PAUSED:
            return self.model.pause_until
        if reason is Reason.HALTED:
            return None
        levels = [self.model.conn] + ([self.model.ents[entity_type]] if entity_type else [])
        tills = [lv.till for lv in levels if lv.state in ("open", "blocked") and lv.till > now]
        return max(tills) if tills else None

    def record(self, admission: Admission, *, outcome: Outcome) -> RecordResult:
        if not admission.allowed:
            raise ValueError("only an allowed admission has an outcome to record")
        now = self._now()
        conn, ent = self.model.record(admission, outcome, self.jitter(), now)
        distinct = 0
        entity = admission.entity_type
        if entity and not outcome.success and outcome.scope is Scope.ENTITY_TYPE and outcome.kind:
            seen = self._evidence[outcome.kind]
            seen[entity] = now
            for name, at in list(seen.items()):
                if at < now - self.policy.evidence_window_s:
                    del seen[name]
            distinct = len(seen)
        return RecordResult(
            connection=self._result("connection", self.model.conn, *conn),
            entity=self._result(entity, self.model.ents[entity], *ent) if entity and ent else None,
            distinct_entity_types=distinct,
        )

    def record_and_admit(
        self, admission: Admission, *, outcome: Outcome, entity_type: str | None
    ) -> tuple[RecordResult, Admission]:
        """``record`` then ``admit``, as ``record_admit.lua`` runs them in one script."""
        recorded = self.record(admission, outcome=outcome)
        return recorded, self.admit(admission.connection_id, entity_type)

    @staticmethod
    def _result(name: str, lv: Level, stale: bool, frm: str | None) -> LevelResult:
        state = State(lv.state)
        until = lv.till if lv.till > 0 else None
        transition = (
            Transition(
                level=name,
                from_state=State(frm),
                to_state=state,
                generation=lv.gen,
                until=until,
                reason=lv.reason,
            )
            if frm is not None
            else None
        )
        return LevelResult(
            stale=stale,
            state=state,
            generation=lv.gen,
            until=until,
            reason=lv.reason,
            transition=transition,
        )

    def _change(self, lv: Level, moved: bool, frm: str) -> Change:
        return Change(
            transitioned=moved,
            from_state=State(frm),
            state=State(lv.state),
            generation=lv.gen,
            until=lv.till if lv.till > 0 else None,
            reason=lv.reason,
        )

    def halt(self, connection_id: str, reason: str) -> Change:
        frm = self.model.conn.state
        return self._change(self.model.conn, self.model.halt(reason, self._now()), frm)

    def block(self, connection_id: str, entity_type: str, reason: str) -> Change:
        lv = self.model.ents[entity_type]
        frm = lv.state
        return self._change(lv, self.model.block(entity_type, reason, self._now()), frm)

    def force_open(
        self, connection_id: str, entity_type: str | None = None, *, seconds: float, reason: str
    ) -> Change:
        lv = self.model.ents[entity_type] if entity_type else self.model.conn
        frm = lv.state
        moved = self.model.force_open(entity_type, seconds, reason, self._now())
        return self._change(lv, moved, frm)

    def force_close(
        self, connection_id: str, entity_type: str | None = None, *, reason: str
    ) -> Change:
        lv = self.model.ents[entity_type] if entity_type else self.model.conn
        frm = lv.state
        return self._change(lv, self.model.force_close(entity_type, reason, self._now()), frm)

    def pause(
        self, connection_id: str, seconds: float, reason: str, *, met_by: Admission | None = None
    ) -> PauseChange:
        if seconds <= 0:
            raise ValueError("seconds must be > 0")
        token = met_by.in_flight_token if met_by else None
        moved = self.model.pause(seconds, reason, self._now(), token)
        return PauseChange(transitioned=moved, until=self.model.pause_until)
