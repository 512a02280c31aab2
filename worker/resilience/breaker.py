"""Circuit breakers per connection and per (connection, entity type), held in Redis.

Every decision is one Lua script (``worker/resilience/lua/*.lua``) using Redis ``TIME`` as
the only clock; all keys of a connection share the hash tag ``{cb:<id>}``
(``worker.coordination.redis_keys``), so the scripts also run on Redis Cluster.

States: ``closed``; ``open`` until T; ``half_open`` (one probe, the caller that
wins ``SET probe NX PX probe_ttl_s``; the token is released by
compare-and-delete and expires if its holder crashed); ``halted`` (connection
only, auth: ends only by ``resume``); ``blocked`` (entity type only, 403/404:
one probe permit every ``block_reprobe_s``, success unblocks). Apart from the
breaker, a connection may be ``paused`` until T (429 Retry-After), and after
that runs one request at a time for as long again (``lua/one_at_a_time.lua``).

Every transition bumps the level's generation and resets its counters; an
admission carries both generations and ``record`` drops outcomes of an
earlier generation ("stale"). Exactly one caller sees each transition
(principle 6: events fire on transitions).

Tripping: a failure RATE >= ``failure_rate`` over ``buckets`` x ``bucket_s``
seconds once ``min_calls`` calls are in the window, or ``consecutive_failures``
in a row. Open time: see ``open_interval``.

Counting contract: the caller decides ``counts_as_failure``. Timeouts, 5xx and
connection errors count; 4xx validation, cancellations and "breaker open" never
do. A failure belongs to one level (``scope``): CONNECTION (default) or
ENTITY_TYPE; the other level treats it as neutral, as it does a non-counting
failure or scope RECORD, with one exception: a counting ENTITY_TYPE failure of
the probe of a half-open connection fails the connection's probe too (it
reopens, with backoff; no second caller probes the same half-open spell). A
neutral outcome of a probe (``Outcome.neutral()`` for a cancelled call)
releases the probe for another caller. Failures with
scope ENTITY_TYPE also feed escalation evidence
(``RecordResult.distinct_entity_types``), counting or not, stale or not.

Redis unreachable: every redis exception becomes ``CoordinationError``. The
policy is fail-closed for new work: ``admit`` raises, and the caller defers
the job briefly and retries it (burning no retry budget). ``record`` raising
loses one sample; the caller logs it and carries on.

Time in tests: ``Breaker(now_override=clock)`` passes a fake clock to the
scripts (ARGV[1]) instead of Redis TIME, and ``jitter=`` pins the full-jitter
draw; production leaves both alone.

Rate limit: ``admit`` also runs the connection's GCRA limiter (``limits.py``)
in the same script; per-connection overrides come from the Redis hash written
by ``Limits.set_connection_limits``, else ``RatePolicy``.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis

from worker.coordination import redis_keys
from worker.coordination.scripts import (
    Clock,
    LuaScript,
    ScriptCall,
    coordination,
    now_arg,
    text,
)
from worker.errors import Scope
from worker.resilience.backoff import full_jitter
from worker.resilience.breaker_reader import BreakerReader, until_of
from worker.resilience.breaker_types import (
    Admission,
    BreakerView,
    Change,
    LevelResult,
    LevelView,
    Outcome,
    PauseChange,
    Reason,
    RecordResult,
    State,
    Transition,
    level_effects,
)
from worker.resilience.limits import RatePolicy, lua

__all__ = [
    "Admission",
    "Breaker",
    "BreakerPolicy",
    "BreakerView",
    "Change",
    "LevelResult",
    "LevelView",
    "Outcome",
    "PauseChange",
    "Reason",
    "RecordResult",
    "State",
    "Transition",
    "level_effects",
    "open_interval",
]

DAY = 86_400.0


@dataclass(frozen=True, kw_only=True, slots=True)
class BreakerPolicy:
    """Thresholds and durations (seconds) of every breaker."""

    bucket_s: float = 10.0
    buckets: int = 6
    min_calls: int = 10
    failure_rate: float = 0.5
    consecutive_failures: int = 5
    base_open_s: float = 5.0
    max_open_s: float = 600.0
    min_open_s: float = 1.0
    probe_ttl_s: float = 90.0  # longer than a call's whole deadline
    busy_retry_s: float = 5.0  # retry_in when another caller holds the probe
    block_reprobe_s: float = 1800.0
    max_pause_s: float = 3600.0
    one_at_a_time_poll_s: float = 0.05  # retry_in while another request is in flight
    evidence_window_s: float = 120.0
    state_ttl_s: float = 2400.0  # closed/open state lives this long past its until
    halt_ttl_s: float = 7 * DAY  # refreshed by every admit that meets it
    block_ttl_s: float = 7 * DAY

    def __post_init__(self) -> None:
        if not 0 < self.failure_rate <= 1:
            raise ValueError("failure_rate must be in (0, 1]")
        if min(self.buckets, self.min_calls, self.consecutive_failures) < 1:
            raise ValueError("buckets, min_calls and consecutive_failures must be >= 1")
        if not 0 < self.min_open_s <= self.base_open_s <= self.max_open_s:
            raise ValueError("need 0 < min_open_s <= base_open_s <= max_open_s")
        if self.state_ttl_s < self.max_open_s:
            raise ValueError("state_ttl_s must be >= max_open_s")


def open_interval(
    policy: BreakerPolicy, *, openings: int, jitter: float, retry_after: float | None = None
) -> float:
    """Seconds a breaker stays open after its ``openings``-th consecutive opening (0-based).

    Full jitter: ``jitter`` (uniform in [0, 1]) times ``min(max_open_s,
    base_open_s * 2**openings)``, floored at ``min_open_s`` so it never flaps
    instantly, and never shorter than the upstream's ``retry_after``. Mirrors
    ``open_interval`` in ``lua/common.lua``.
    """
    drawn = full_jitter(
        openings, base=policy.base_open_s, cap=policy.max_open_s, rand=lambda: jitter
    )
    interval = max(policy.min_open_s, drawn)
    if retry_after is not None and retry_after > interval:
        interval = retry_after
    return interval


class Breaker:
    """Breakers, pauses and the rate limit of every connection, in one Redis.

    ``jitter`` draws the full-jitter factor (tests pin it); ``now_override``
    replaces Redis TIME inside the scripts and is for tests only.
    """

    def __init__(
        self,
        *,
        client: redis.Redis,
        policy: BreakerPolicy | None = None,
        rate: RatePolicy | None = None,
        jitter: Callable[[], float] = random.random,
        now_override: Clock | None = None,
    ) -> None:
        self.redis = client
        self.policy = policy or BreakerPolicy()
        self.rate = rate or RatePolicy()
        self.jitter = jitter
        self.now_override = now_override
        self._policy_json = json.dumps(
            asdict(self.policy) | {"rate_per_s": self.rate.rate_per_s, "burst": self.rate.burst}
        )
        self._admit = LuaScript(client, lua("admit"))
        self._record = LuaScript(client, lua("record"))
        self._record_admit = LuaScript(client, lua("record_admit"))
        self._set_state = LuaScript(client, lua("set_state"))
        self._pause = LuaScript(client, lua("pause"))
        self._reader = BreakerReader(
            client,
            bucket_s=self.policy.bucket_s,
            buckets=self.policy.buckets,
            now_override=now_override,
        )

    def _run(self, script: Any, what: str, keys: list[str], *args: Any) -> list[Any]:
        with coordination(what):
            reply = script(keys=keys, args=[now_arg(self.now_override), self._policy_json, *args])
        return list(reply)

    def admit(self, connection_id: str, entity_type: str | None = None) -> Admission:
        """May this caller send one request now? One script, one round trip."""
        token = uuid.uuid4().hex
        keys = _admit_keys(connection_id, entity_type)
        r = self._run(self._admit, f"admit {connection_id}", keys, token)
        return _admission(connection_id, entity_type, r, token)

    def record(self, admission: Admission, *, outcome: Outcome) -> RecordResult:
        """Apply an admitted call's outcome to its breakers. One script."""
        keys, args = self._record_call(admission, outcome)
        r = self._run(self._record, f"record {admission.connection_id}", keys, *args)
        return _record_result(admission.entity_type, r)

    def record_and_admit(
        self, admission: Admission, *, outcome: Outcome, entity_type: str | None
    ) -> tuple[RecordResult, Admission]:
        """``record`` then ``admit`` (same connection) in one script, one round trip.

        The admission is decided after the record in the same script, so it
        is the one a separate ``admit`` right after ``record`` would give.
        """
        record_keys, record_args = self._record_call(admission, outcome)
        cid = admission.connection_id
        token = uuid.uuid4().hex
        keys = record_keys + _admit_keys(cid, entity_type)
        r = self._run(
            self._record_admit,
            f"record and admit {cid}",
            keys,
            len(record_keys),
            *record_args,
            token,
        )
        recorded = _record_result(admission.entity_type, list(r[0]))
        return recorded, _admission(cid, entity_type, list(r[1]), token)

    def record_call(self, admission: Admission, *, outcome: Outcome) -> ScriptCall:
        """``record`` as a call to send with others (``scripts.in_one_round_trip``)."""
        keys, args = self._record_call(admission, outcome)
        policy = [now_arg(self.now_override), self._policy_json]
        return ScriptCall(self._record, keys, policy + args)

    def _record_call(self, admission: Admission, outcome: Outcome) -> tuple[list[str], list[Any]]:
        """The keys and arguments (after ARGV 1-2) of ``record.lua`` for one outcome."""
        if not admission.allowed:
            raise ValueError("only an allowed admission has an outcome to record")
        cid, entity = admission.connection_id, admission.entity_type
        conn_effect, ent_effect = level_effects(outcome, has_entity=entity is not None)
        conn = redis_keys.connection_level(cid)
        keys = [*conn.all(), redis_keys.entity_index(cid), redis_keys.one_at_a_time(cid)]
        if entity is not None:
            ent = redis_keys.entity_level(cid, entity)
            keys += ent.all()
            if not outcome.success and outcome.scope is Scope.ENTITY_TYPE and outcome.kind:
                keys.append(redis_keys.evidence(cid, outcome.kind))
        args: list[Any] = [
            admission.conn_generation,
            admission.entity_generation,
            admission.probe_token or "",
            conn_effect,
            ent_effect,
            outcome.kind.value if outcome.kind else "success",
            repr(float(outcome.retry_after or 0.0)),
            repr(min(1.0, max(0.0, float(self.jitter())))),
            entity or "",
            admission.in_flight_token or "",
        ]
        return keys, args

    def _direct(
        self, connection_id: str, entity_type: str | None, op: str, reason: str, seconds: float = 0
    ) -> Change:
        if entity_type is None:
            lk = redis_keys.connection_level(connection_id)
            keys = lk.all()
        else:
            lk = redis_keys.entity_level(connection_id, entity_type)
            keys = [*lk.all(), redis_keys.entity_index(connection_id)]
        what = f"{op} {connection_id} {entity_type or ''}".rstrip()
        r = self._run(
            self._set_state, what, keys, op, repr(float(seconds)), reason, entity_type or ""
        )
        return Change(
            transitioned=int(r[0]) == 1,
            from_state=State(text(r[1])),
            state=State(text(r[2])),
            generation=int(text(r[3])),
            until=until_of(r[4]),
            reason=text(r[5]),
        )

    def halt(self, connection_id: str, reason: str) -> Change:
        """Stop every call of the connection until ``resume`` (auth failure)."""
        return self._direct(connection_id, None, "halt", reason)

    def resume(self, connection_id: str, reason: str = "resumed") -> Change:
        """End a halt (new token, healthy status) or an open connection breaker.

        Entity-type breakers and an active pause are left as they are.
        """
        return self._direct(connection_id, None, "close", reason)

    def block(self, connection_id: str, entity_type: str, reason: str) -> Change:
        """Stop calling one entity type; re-probed every ``block_reprobe_s``."""
        return self._direct(connection_id, entity_type, "block", reason)

    def unblock(self, connection_id: str, entity_type: str, reason: str = "unblocked") -> Change:
        """Close a blocked entity type again."""
        return self._direct(connection_id, entity_type, "unblock", reason)

    def force_open(
        self, connection_id: str, entity_type: str | None = None, *, seconds: float, reason: str
    ) -> Change:
        """Open a level by hand for ``seconds`` (then half-open as usual)."""
        if seconds <= 0:
            raise ValueError("seconds must be > 0")
        return self._direct(connection_id, entity_type, "open", reason, seconds)

    def force_close(
        self, connection_id: str, entity_type: str | None = None, *, reason: str = "forced close"
    ) -> Change:
        """Close a level by hand, whatever its state (halted and blocked included)."""
        return self._direct(connection_id, entity_type, "close", reason)

    def pause(
        self, connection_id: str, seconds: float, reason: str, *, met_by: Admission | None = None
    ) -> PauseChange:
        """Hold every call of the connection for ``seconds`` (clamped to ``max_pause_s``).

        Extends an active pause, never shortens it. Then the connection runs
        one request at a time until a full ``seconds`` more pass without a
        pause; ``met_by`` (the admission that met the 429) frees its place as
        the one request in flight, in the same script, so nothing is admitted
        between the record and the pause.
        """
        if seconds <= 0:
            raise ValueError("seconds must be > 0")
        seconds = min(seconds, self.policy.max_pause_s)
        keys = [redis_keys.pause(connection_id), redis_keys.one_at_a_time(connection_id)]
        token = (met_by.in_flight_token if met_by else None) or ""
        r = self._run(
            self._pause, f"pause {connection_id}", keys, repr(float(seconds)), reason, token
        )
        return PauseChange(transitioned=int(r[0]) == 1, until=float(text(r[1])))

    def reset(self, connection_id: str, entity_type: str | None = None) -> int:
        """Delete breaker state: one entity type's, or the connection's (every level,
        the pause and the escalation evidence). Rate state, limit overrides and
        concurrency slots are left alone. Returns the number of keys deleted."""
        with coordination(f"reset {connection_id}"):
            if entity_type is not None:
                lk = redis_keys.entity_level(connection_id, entity_type)
                pipe = self.redis.pipeline(transaction=True)
                pipe.delete(*lk.all())
                pipe.srem(redis_keys.entity_index(connection_id), entity_type)
                return int(pipe.execute()[0])
            keys = [
                *redis_keys.connection_level(connection_id).all(),
                redis_keys.pause(connection_id),
                redis_keys.one_at_a_time(connection_id),
                redis_keys.entity_index(connection_id),
                *redis_keys.evidence_keys(connection_id),
            ]
            for member in self.redis.smembers(redis_keys.entity_index(connection_id)):
                keys += redis_keys.entity_level(connection_id, text(member)).all()
            return int(self.redis.delete(*keys))

    def show(self, connection_id: str) -> BreakerView:
        """Every level's stored state, for humans (``BreakerReader.show``)."""
        return self._reader.show(connection_id)

    def show_many(
        self, connection_ids: Sequence[str], *, chunk: int = 500
    ) -> dict[str, BreakerView]:
        """``show`` for many connections, pipelined (``BreakerReader.show_many``)."""
        return self._reader.show_many(connection_ids, chunk=chunk)


def _admit_keys(connection_id: str, entity_type: str | None) -> list[str]:
    """The keys of ``admit.lua`` for one (connection, entity type)."""
    conn = redis_keys.connection_level(connection_id)
    keys = [
        *conn.all(),
        redis_keys.pause(connection_id),
        redis_keys.rate(connection_id),
        redis_keys.limits(connection_id),
        redis_keys.one_at_a_time(connection_id),
    ]
    if entity_type is not None:
        keys += redis_keys.entity_level(connection_id, entity_type).all()
    return keys


def _admission(connection_id: str, entity_type: str | None, r: list[Any], token: str) -> Admission:
    """An Admission from ``admit.lua``'s reply."""
    probe = int(r[6]) == 1
    in_flight = int(r[7]) == 1
    return Admission(
        connection_id=connection_id,
        entity_type=entity_type,
        allowed=int(r[0]) == 1,
        reason=Reason(text(r[1])),
        until=float(text(r[2])) if text(r[2]) else None,
        retry_in=max(0.0, float(text(r[3]))),
        conn_generation=int(text(r[4])),
        entity_generation=int(text(r[5])),
        probe=probe,
        probe_token=token if probe else None,
        in_flight_token=token if in_flight else None,
    )


def _record_result(entity_type: str | None, r: list[Any]) -> RecordResult:
    """A RecordResult from ``record.lua``'s reply."""
    return RecordResult(
        connection=_level_result("connection", r[0:6]),
        entity=_level_result(entity_type, r[6:12]) if entity_type is not None else None,
        distinct_entity_types=int(r[12]),
    )


def _level_result(level: str, r: list[Any]) -> LevelResult:
    state = State(text(r[1]))
    until = until_of(r[4])
    from_state = text(r[3])
    transition = None
    if from_state:
        transition = Transition(
            level=level,
            from_state=State(from_state),
            to_state=state,
            generation=int(text(r[2])),
            until=until,
            reason=text(r[5]),
        )
    return LevelResult(
        stale=text(r[0]) == "stale",
        state=state,
        generation=int(text(r[2])),
        until=until,
        reason=text(r[5]),
        transition=transition,
    )
