"""The resilience core around every upstream call: admit, call, judge, act.

Before a call, the connection's breakers, pause and rate limit must admit it
(one Redis script). After it, the outcome is recorded (one more script) and a
failure is classified on two axes. A guard made with ``carry_successes``
(the paging loop's) does not record a plain success at once: the next
admission's script records it first (``Breaker.record_and_admit``), so a
page costs one round trip, and the owner sends the last one's record
(``carried_record``) with its own calls at the end of the loop. A probe's
success and every failure are recorded at once. The verdict's action is
carried out here:

    halt          the connection halts until re-authorised       -> Halted
    pause         the whole connection waits out Retry-After,    -> Deferred
                  then runs one request at a time for a window
    block_entity  this entity type is blocked until a re-probe   -> Blocked
    open_breaker  a tripped breaker parks the job                -> Deferred
    retry         not tripped yet: the job retries with backoff  -> RetryLater
    fail          permanent: the UpstreamError propagates

Each state change reaches ``on_transition`` exactly once, whichever of many
workers caused it (principle 6).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from worker.coordination.scripts import ScriptCall
from worker.errors import Blocked, Deferred, Halted, Kind, RetryLater, Scope, UpstreamError
from worker.resilience.breaker import (
    Admission,
    Breaker,
    Change,
    Outcome,
    Reason,
    RecordResult,
    State,
    open_interval,
)
from worker.resilience.breaker_types import Actor
from worker.resilience.classify import Action, Verdict, Where, classify

T = TypeVar("T")

# Kinds that are normal for one entity type (the account may not read work
# orders, the source has no purchase orders): only when every entity type the
# connection syncs fails this way is it the account's problem.
_PER_ENTITY_KINDS = frozenset({Kind.PERMISSION, Kind.NOT_SUPPORTED})

# Refusals that end within moments: the caller waits in place (up to
# max_rate_wait_s) instead of parking the job.
_WAIT_IN_PLACE = frozenset({Reason.RATE_LIMITED, Reason.ONE_AT_A_TIME})


@dataclass(frozen=True)
class StateChange:
    """One transition of a connection (entity_type None) or of one entity type."""

    connection_id: str
    entity_type: str | None
    from_state: State
    to_state: State
    reason: str
    until: float | None
    cause: UpstreamError | None = None  # the failure behind it, when there was one
    actor: Actor = Actor.WORKER  # a person's own action is never reported to them


OnTransition = Callable[[StateChange], None]


class Guard:
    """Guards the upstream calls of one connection."""

    def __init__(
        self,
        *,
        breaker: Breaker,
        connection_id: str,
        entity_types_synced: int,
        on_transition: OnTransition,
        default_pause_s: float = 30.0,
        max_rate_wait_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        carry_successes: bool = False,
    ) -> None:
        self._breaker = breaker
        self._connection_id = connection_id
        self._all_types = max(2, entity_types_synced)
        self._on_transition = on_transition
        self._default_pause_s = default_pause_s
        self._max_rate_wait_s = max_rate_wait_s
        self._sleep = sleep
        self._cause: UpstreamError | None = None  # the failure being acted on
        self._carry = carry_successes
        # A success not recorded yet: the next admission's script records it.
        self._carried: Admission | None = None

    # -- before ------------------------------------------------------------------

    def admit(self, entity_type: str | None) -> Admission:
        """Admission for one call; short rate-limit waits happen here, in place."""
        waited = 0.0
        while True:
            admission = self._admit_once(entity_type)
            if admission.allowed:
                return admission
            if (
                admission.reason in _WAIT_IN_PLACE
                and waited + admission.retry_in <= self._max_rate_wait_s
            ):
                self._sleep(admission.retry_in)
                waited += admission.retry_in
                continue
            raise self._refusal(admission)

    def _admit_once(self, entity_type: str | None) -> Admission:
        """One admission; it records the carried success first, in the same script."""
        carried, self._carried = self._carried, None
        if carried is None:
            return self._breaker.admit(self._connection_id, entity_type)
        result, admission = self._breaker.record_and_admit(
            carried, outcome=Outcome.ok(), entity_type=entity_type
        )
        self._emit_result(result)
        return admission

    def carried_record(self) -> ScriptCall | None:
        """The record of the success still carried, as a call to send with others
        (``scripts.in_one_round_trip``); None when nothing is carried.

        Its reply needs no reading: a carried success is never a probe's, and
        any other success makes no transition (it is applied to a closed
        level, or is stale).
        """
        carried, self._carried = self._carried, None
        if carried is None:
            return None
        return self._breaker.record_call(carried, outcome=Outcome.ok())

    def _refusal(self, admission: Admission) -> Exception:
        where = admission.entity_type or "connection"
        if admission.reason is Reason.HALTED:
            return Halted(f"connection {self._connection_id} is halted: re-authorise it")
        if admission.reason is Reason.BLOCKED:
            return Blocked(f"{where} is blocked until its next re-probe")
        until = admission.until or (time.time() + max(admission.retry_in, 1.0))
        return Deferred(f"{where} {admission.reason.value}", until=until)

    # -- around ------------------------------------------------------------------

    def call(self, entity_type: str | None, where: Where, fn: Callable[[], T]) -> T:
        """Admit, run ``fn`` (one upstream request), record and judge its outcome."""
        admission = self.admit(entity_type)
        try:
            value = fn()
        except UpstreamError as exc:
            self._cause = exc
            try:
                raise self._judge(admission, exc, where) from exc
            finally:
                self._cause = None
        except BaseException:
            # Not an answer from the upstream (our bug, a cancellation): it says
            # nothing about the upstream's health, but it must free a probe.
            self._record(admission, Outcome.neutral())
            raise
        if self._carry and not admission.probe and admission.in_flight_token is None:
            # A plain success changes no state (docs/design.md, "Around each
            # request"): recording it with the next admission saves a round trip.
            # The one request in flight after a 429 is recorded at once, so
            # the connection's other entity types get their turn.
            self._carried = admission
        else:
            self._record(admission, Outcome.ok())
        return value

    def _record(self, admission: Admission, outcome: Outcome) -> RecordResult:
        result = self._breaker.record(admission, outcome=outcome)
        self._emit_result(result)
        return result

    def _emit_result(self, result: RecordResult) -> None:
        for transition in result.transitions:
            level = None if transition.level == "connection" else transition.level
            self._emit(
                level,
                transition.from_state,
                transition.to_state,
                transition.reason,
                transition.until,
            )

    # -- after a failure ---------------------------------------------------------

    def _judge(self, admission: Admission, exc: UpstreamError, where: Where) -> Exception:
        first = classify(exc, where=where)
        result = self._record(
            admission,
            Outcome.failure(
                first.kind,
                counts_as_failure=first.counts_as_failure,
                scope=first.scope,
                retry_after=first.retry_after,
            ),
        )
        escalate_at = self._all_types if first.kind in _PER_ENTITY_KINDS else 2
        verdict = classify(
            exc,
            where=where,
            distinct_entity_types_failing=result.distinct_entity_types,
            escalate_at=escalate_at,
        )
        return self._act(admission, verdict, result, exc)

    def _act(
        self, admission: Admission, verdict: Verdict, result: RecordResult, exc: UpstreamError
    ) -> Exception:
        entity_type = admission.entity_type
        reason = verdict.summary
        if verdict.action is Action.HALT:
            self._changed(None, self._breaker.halt(self._connection_id, reason))
            return Halted(f"connection halted: {reason}")
        if verdict.action is Action.PAUSE:
            seconds = verdict.retry_after or self._default_pause_s
            pause = self._breaker.pause(
                self._connection_id, max(seconds, 0.001), reason, met_by=admission
            )
            if pause.transitioned:
                self._emit(None, State.CLOSED, State.PAUSED, reason, pause.until)
            return Deferred(f"paused: {reason}", until=pause.until)
        if verdict.action is Action.BLOCK_ENTITY and entity_type is not None:
            self._changed(
                entity_type, self._breaker.block(self._connection_id, entity_type, reason)
            )
            return Blocked(f"{entity_type} blocked: {reason}")
        if verdict.action in (Action.OPEN_BREAKER, Action.RETRY):
            return self._open_or_retry(entity_type, verdict, result)
        return exc  # fail: permanent for this job

    def _open_or_retry(
        self, entity_type: str | None, verdict: Verdict, result: RecordResult
    ) -> Exception:
        connection = result.connection
        escalated = verdict.scope is Scope.CONNECTION and entity_type is not None
        if escalated and connection.state is not State.OPEN:
            # Escalated by evidence: the failure hit several entity types, so
            # the whole connection is sick even if no level tripped yet.
            seconds = open_interval(
                self._breaker.policy,
                openings=0,
                jitter=self._breaker.jitter(),
                retry_after=verdict.retry_after,
            )
            change = self._breaker.force_open(
                self._connection_id, seconds=seconds, reason=verdict.summary
            )
            self._changed(None, change)
            return Deferred(f"connection open: {verdict.summary}", until=_until(change))
        if connection.state is State.OPEN and connection.until is not None:
            return Deferred(f"connection open: {verdict.summary}", until=connection.until)
        entity = result.entity
        if entity is not None and entity.state is State.OPEN and entity.until is not None:
            return Deferred(f"{entity_type} open: {verdict.summary}", until=entity.until)
        return RetryLater(verdict.summary, kind=verdict.kind, retry_after=verdict.retry_after)

    # -- transitions -------------------------------------------------------------

    def _changed(self, entity_type: str | None, change: Change) -> None:
        if change.transitioned:
            self._emit(entity_type, change.from_state, change.state, change.reason, change.until)

    def _emit(
        self,
        entity_type: str | None,
        from_state: State,
        to_state: State,
        reason: str,
        until: float | None,
    ) -> None:
        self._on_transition(
            StateChange(
                self._connection_id,
                entity_type,
                from_state,
                to_state,
                reason,
                until,
                cause=self._cause,
            )
        )


def _until(change: Change) -> float:
    return change.until if change.until is not None else time.time() + 1.0
