"""Value types of the breaker: states, admissions, outcomes, results and views.

They carry no behaviour beyond pure helpers; ``worker.resilience.breaker`` re-exports
them, so callers import everything from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from worker.errors import Kind, Scope


class State(StrEnum):
    """Where one breaker level is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    HALTED = "halted"
    BLOCKED = "blocked"
    # Not a breaker level's state: the connection's 429 pause, kept beside the
    # breakers (pause.lua). A transition into it is recorded like the others.
    PAUSED = "paused"

    @property
    def label(self) -> str:
        """How people read it (status, dashboard, ``sync --wait``): ``healthy``, ``half-open``."""
        return "healthy" if self is State.CLOSED else self.value.replace("_", "-")


class Actor(StrEnum):
    """Who changed a breaker: the worker by its rules, or a person by hand."""

    WORKER = "worker"
    OPERATOR = "operator"


class Reason(StrEnum):
    """Why ``admit`` said what it said."""

    OK = "ok"
    HALTED = "halted"
    PAUSED = "paused"
    OPEN = "open"
    HALF_OPEN_BUSY = "half_open_busy"
    BLOCKED = "blocked"
    RATE_LIMITED = "rate_limited"
    # After a 429 the connection runs one request at a time; another is in flight.
    ONE_AT_A_TIME = "one_at_a_time"


@dataclass(frozen=True, kw_only=True, slots=True)
class Admission:
    """The answer of ``admit``; pass it back to ``record`` when allowed."""

    connection_id: str
    entity_type: str | None
    allowed: bool
    reason: Reason
    until: float | None  # unix seconds (Redis clock) when it is worth asking again
    retry_in: float  # seconds from now until then (a short wait when rate limited)
    conn_generation: int = 0
    entity_generation: int = 0
    probe: bool = False
    probe_token: str | None = None
    # Set when admitted as the connection's one request in flight (after a 429).
    in_flight_token: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """What happened to an admitted call; build with ``ok()`` or ``failure()``."""

    success: bool
    kind: Kind | None = None
    counts_as_failure: bool = False
    scope: Scope = Scope.CONNECTION
    retry_after: float | None = None

    @classmethod
    def ok(cls) -> Outcome:
        """The call worked."""
        return cls(success=True)

    @classmethod
    def neutral(cls) -> Outcome:
        """The call told nothing about the upstream (cancelled, never sent).

        Counts nowhere; a probe recorded this way is released for another caller.
        """
        return cls(success=False)

    @classmethod
    def failure(
        cls,
        kind: Kind,
        *,
        counts_as_failure: bool,
        scope: Scope = Scope.CONNECTION,
        retry_after: float | None = None,
    ) -> Outcome:
        """The call failed with ``kind``; see the module docstring for counting."""
        return cls(
            success=False,
            kind=kind,
            counts_as_failure=counts_as_failure,
            scope=scope,
            retry_after=retry_after,
        )


def level_effects(outcome: Outcome, *, has_entity: bool) -> tuple[str, str]:
    """What an outcome means to (connection level, entity level).

    Each is ``success``, ``failure`` or ``neutral``. A failure counts at the
    level of its scope only; scope ENTITY_TYPE without an entity type falls
    back to the connection.
    """
    if outcome.success:
        return "success", "success"
    if not outcome.counts_as_failure or outcome.scope is Scope.RECORD:
        return "neutral", "neutral"
    if outcome.scope is Scope.ENTITY_TYPE and has_entity:
        return "neutral", "failure"
    return "failure", "neutral"


@dataclass(frozen=True, kw_only=True, slots=True)
class Transition:
    """A state change that this caller, and only this caller, caused."""

    level: str  # "connection" or the entity type
    from_state: State
    to_state: State
    generation: int
    until: float | None
    reason: str  # stored with the new state, e.g. "unavailable: 5 consecutive failures"


@dataclass(frozen=True, kw_only=True, slots=True)
class LevelResult:
    """One level after ``record``; ``stale`` when the outcome was dropped."""

    stale: bool
    state: State
    generation: int
    until: float | None
    reason: str
    transition: Transition | None


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordResult:
    """The answer of ``record``."""

    connection: LevelResult
    entity: LevelResult | None
    distinct_entity_types: int  # with this kind in the evidence window; 0 if none

    @property
    def transitions(self) -> tuple[Transition, ...]:
        """The transitions this call caused (fire one event per item)."""
        levels = (self.connection, self.entity)
        return tuple(lv.transition for lv in levels if lv is not None and lv.transition)

    @property
    def stale(self) -> bool:
        """True when every level dropped the outcome."""
        return self.connection.stale and (self.entity is None or self.entity.stale)


@dataclass(frozen=True, kw_only=True, slots=True)
class Change:
    """The answer of a direct transition; ``transitioned`` for one caller only."""

    transitioned: bool
    from_state: State
    state: State
    generation: int
    until: float | None
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PauseChange:
    """The answer of ``pause``; ``transitioned`` when no pause was active before."""

    transitioned: bool
    until: float


@dataclass(frozen=True, kw_only=True, slots=True)
class LevelView:
    """One level as stored, for the status table and ``entity-sync breaker show``."""

    level: str
    state: State
    since: float | None  # when it entered this state (Redis clock)
    until: float | None
    reason: str
    generation: int
    openings: int
    consecutive_failures: int
    calls: int  # in the failure-rate window
    failures: int
    probe_held: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class BreakerView:
    """Every level of one connection, read at ``now`` (Redis clock)."""

    connection_id: str
    now: float
    connection: LevelView
    paused_until: float | None
    pause_reason: str
    entity_types: tuple[LevelView, ...]
