"""Fault scenarios: which fault, if any, answers one request of a connection.

Scenarios are named and documented in ``README.md``; this module holds their
runtime state (clock, counters, latches) and judges each request:

1. a latched ``auth_fail_from_page`` answers 401 until the token is rotated;
2. inside an announced ``Retry-After`` window every request gets 429, as a
   real limiter does;
3. otherwise the scenarios are tried in list order and the first active one
   that fires wins. ``slow`` never wins: its latency adds to the answer.

The lies of ``lies.py`` are scenarios of lists only, and ``sync_status`` one of
the status endpoint only, so a lie and a status combine in one list.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from harness.sandbox.clock import ceil_seconds, http_date
from harness.sandbox.config import ScenarioSpec
from harness.sandbox.lies import LIES
from worker.entities import EntityType

# Faults that only make sense on a list of records (the lies of lies.py among them).
_LIST_ONLY = frozenset({"forbidden", "not_supported", "bad_record", *LIES})
# Faults of the status endpoint alone.
_STATUS_ONLY = frozenset({"sync_status"})


@dataclass(frozen=True)
class Verdict:
    """How to answer: extra latency, and the scenario answering instead of the data."""

    latency_s: float = 0.0
    scenario: ScenarioSpec | None = None
    retry_after: str | None = None
    inside_retry_window: bool = False


class FaultState:
    """Clock, counters and latches of one connection's scenarios. Not thread-safe:
    the connection's lock guards it."""

    def __init__(self, scenarios: list[ScenarioSpec], seed: int) -> None:
        self._seed = seed
        self.restart(scenarios)

    def restart(self, scenarios: list[ScenarioSpec]) -> None:
        """Install scenarios and restart their clock, counters and latches."""
        self.scenarios = list(scenarios)
        self.started = time.monotonic()
        self.list_requests = 0
        self._rng = random.Random(f"{self._seed}:faults")
        self._counts: dict[int, int] = {}
        self._spent: set[int] = set()
        self.auth_latch: ScenarioSpec | None = None
        self._retry_until = 0.0
        self._retry_date: str | None = None
        self._retry_spec: ScenarioSpec | None = None

    def revoke(self) -> None:
        """The customer's credentials changed: every request answers 401 until rotated."""
        self.auth_latch = ScenarioSpec(name="auth_fail_from_page")

    def clear_auth(self) -> None:
        """The customer re-authorised: lift the 401 latch (the scenario stays spent)."""
        self.auth_latch = None

    def judge(self, entity: EntityType | None, is_list: bool) -> Verdict:
        """Decide the fault for one request; counts it as it goes."""
        now = time.monotonic()
        elapsed = now - self.started
        if is_list:
            self.list_requests += 1
        active = [
            (i, s)
            for i, s in enumerate(self.scenarios)
            if _applies(s, elapsed, entity, is_list, self.list_requests)
        ]
        latency = sum(s.latency_ms for _, s in active if s.name == "slow") / 1000.0
        if self.auth_latch is not None:
            return Verdict(latency, self.auth_latch)
        if now < self._retry_until and self._retry_spec is not None:
            return Verdict(latency, self._retry_spec, self._retry_header(now), True)
        for index, spec in active:
            if self._fires(index, spec, now, is_list):
                if spec.name == "auth_fail_from_page":
                    self.auth_latch = spec
                if spec.name == "rate_limit":
                    return Verdict(latency, spec, self._announced_header(spec))
                return Verdict(latency, spec)
        return Verdict(latency)

    def _fires(self, index: int, spec: ScenarioSpec, now: float, is_list: bool) -> bool:
        name = spec.name
        if name == "slow":
            return False
        if name in _LIST_ONLY and not is_list:
            return False
        if name in _STATUS_ONLY and is_list:
            return False
        if name == "auth_fail_from_page":
            if index in self._spent or not is_list or self.list_requests < spec.page:
                return False
            self._spent.add(index)
            return True
        if name == "rate_limit":
            count = self._counts.get(index, 0) + 1
            self._counts[index] = count
            if count % spec.every:
                return False
            self._announce(spec, now)
            return True
        if name == "flaky":
            return self._rng.random() < spec.p
        if name == "bad_record" and not spec.every_page:
            if index in self._spent:
                return False
            self._spent.add(index)
        return True

    def _announce(self, spec: ScenarioSpec, now: float) -> None:
        self._retry_spec = spec
        if spec.as_date:
            # An HTTP-date has whole seconds: end the window on the second announced.
            wall_until = float(ceil_seconds(time.time() + spec.retry_after_s))
            self._retry_until = now + (wall_until - time.time())
            self._retry_date = http_date(wall_until)
        else:
            self._retry_until = now + spec.retry_after_s
            self._retry_date = None

    def _announced_header(self, spec: ScenarioSpec) -> str:
        return self._retry_date if self._retry_date is not None else str(spec.retry_after_s)

    def _retry_header(self, now: float) -> str:
        if self._retry_date is not None:
            return self._retry_date
        return str(max(1, ceil_seconds(self._retry_until - now)))


def offline_now(faults: FaultState) -> bool:
    """Whether an ``offline`` scenario of the whole connection is in its window now."""
    elapsed = time.monotonic() - faults.started
    return any(
        s.name == "offline"
        and s.entity is None
        and _applies(s, elapsed, None, False, faults.list_requests)
        for s in faults.scenarios
    )


def _applies(
    spec: ScenarioSpec,
    elapsed: float,
    entity: EntityType | None,
    is_list: bool,
    list_requests: int,
) -> bool:
    if elapsed < spec.after_s:
        return False
    # ``list_requests`` already counts this request when it is a list request:
    # from_request K means "once K - 1 list requests came before".
    if list_requests - int(is_list) < spec.from_request - 1:
        return False
    if spec.for_s is not None and elapsed >= spec.after_s + spec.for_s:
        return False
    if spec.entity is not None and spec.entity != entity:
        return False
    return is_list or not spec.lists_only
