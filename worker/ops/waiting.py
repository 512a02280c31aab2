"""`entity-sync sync --wait`: follow a sync request, entity type by entity type, out loud.

Each poll builds one ``Progress`` per entity type from the store (the run, its
park row) and Redis (breakers and pause, beat's heartbeat, the worker's own
resumes). On a terminal the lines are redrawn in place; otherwise a line is
printed whenever an entity type's state changes.

The wait ends when every entity type has finished, or when every one still
open is *deferred*: parked past the remaining timeout, parked where only beat
can resume it and beat is not running, or held by a breaker, pause, halt or
block with no page fetched for ``PATIENCE_S``. Deferred work goes on in the
background; the command says why it stopped waiting.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

import redis

from worker.celeryapp.beat import BEAT_HINT, beat_running
from worker.errors import EntitySyncError
from worker.ops.status import UNKNOWN, Health, health_of
from worker.resilience.breaker_types import State
from worker.runtime import Runtime
from worker.store import ParkedJob, Run, RunStatus
from worker.store.models import TERMINAL_STATUSES
from worker.sync.recovery import self_resuming
from worker.timeutil import parse_instant

PATIENCE_S = 30.0  # held back with no page fetched this long: deferred (within a minute)
POLL_S = 0.5

# States in which an entity type is held back rather than working.
NO_BEAT = "parked, beat not running"
_HELD = frozenset({"paused", "breaker open", "halted", "blocked", "parked", NO_BEAT})


@dataclass(frozen=True)
class Progress:
    """Where one entity type of the request stands."""

    entity_type: str
    state: str  # queued, running, paused, breaker open, halted, blocked, parked, ...
    until: str | None = None
    reason: str | None = None
    pages: int = 0
    records: int = 0
    run: Run | None = None  # the deciding run once finished

    @property
    def finished(self) -> bool:
        return self.run is not None and self.run.status in TERMINAL_STATUSES

    def key(self) -> tuple[str, str | None]:
        """What counts as a change of state (not every page)."""
        return self.state, self.until

    def what(self, now: float) -> str:
        """The state, and until when."""
        return self.state + (f" until {_clock(self.until, now)}" if self.until else "")

    def why(self, now: float) -> str:
        """The state, until when and why: the reason a wait stopped."""
        return self.what(now) + (f": {self.reason}" if self.reason else "")

    def line(self, now: float) -> str:
        """One line of the live display."""
        text = (
            f"  {self.entity_type:<16} {self.what(now):<44} "
            f"{self.pages:>5} pages {self.records:>8} records"
        )
        return text + (f"  {self.reason}" if self.reason and self.state in _HELD else "")


def _clock(instant: str, now: float) -> str:
    moment = parse_instant(instant)
    left = max(0, round(moment.timestamp() - now))
    return f"{moment.strftime('%H:%M:%S')}Z (in {left} s)"


@dataclass
class Outcome:
    """How the wait ended."""

    runs: list[Run] = field(default_factory=list)  # every entity type finished
    deferred: list[Progress] = field(default_factory=list)  # or these are held back
    timed_out: bool = False


def snapshot(
    rt: Runtime, request_id: str, connection_id: str, entity_types: Sequence[str]
) -> list[Progress]:
    """Where every entity type of a request stands now."""
    store = rt.store
    runs = store.runs_for_request(request_id)
    rejected = next((r for r in runs if r.status == RunStatus.REJECTED), None)
    latest: dict[str, Run] = {}
    for run in runs:
        if run.status == RunStatus.SKIPPED and run.coalesced_into:
            run = store.get_run(run.coalesced_into) or run
        if run.entity_type:
            latest[run.entity_type] = run
    parked = {job.entity_type: job for job in store.parked_jobs(connection_id)}
    health, beat, own = _redis_view(rt, connection_id)
    progress = []
    for entity in entity_types:
        deciding = latest.get(entity) or rejected
        progress.append(
            _progress(entity, deciding, parked.get(entity), health(entity), beat, entity in own)
        )
    return progress


def _redis_view(
    rt: Runtime, connection_id: str
) -> tuple[Callable[[str], Health], bool | None, set[str]]:
    try:
        health = health_of(rt.breaker.show(connection_id))
        own = {e for c, e in self_resuming(rt.redis) if c == connection_id}
    except (EntitySyncError, redis.RedisError):
        return (lambda _e: UNKNOWN), None, set()  # Redis is down; the store still answers
    return health, beat_running(rt.redis, rt.settings), own


def _progress(
    entity: str,
    run: Run | None,
    job: ParkedJob | None,
    health: Health,
    beat: bool | None,
    self_resumes: bool,
) -> Progress:
    if run is None:
        return Progress(entity, "queued")
    if run.status in TERMINAL_STATUSES:
        return Progress(
            entity, str(run.status), None, run.error_message, run.pages, run.records, run
        )
    state, until, reason = _held_by(run, job, health, beat, self_resumes)
    return Progress(entity, state, until, reason, run.pages, run.records)


def _held_by(
    run: Run, job: ParkedJob | None, health: Health, beat: bool | None, self_resumes: bool
) -> tuple[str, str | None, str | None]:
    """(state, until, reason) of an open run: what holds it back, if anything."""
    if health.state in ("halted", "blocked"):
        return health.state, health.until, health.reason
    parked = run.status == RunStatus.DEFERRED and job is not None
    if parked and job is not None and beat is False and not self_resumes:
        reason = f"{job.reason}; parked work will not resume until beat runs ({BEAT_HINT})"
        return NO_BEAT, job.due_at, reason
    # The park row says what stopped this run (the upstream's answer); the
    # breaker's own reason may only say that a probe failed.
    why = job.reason if parked and job is not None else health.reason
    if health.state == "paused":
        return "paused", health.until, why
    if health.state in (State.OPEN.label, State.HALF_OPEN.label):
        return "breaker open", health.until, why
    if parked and job is not None:
        return "parked", job.due_at, job.reason
    return ("queued" if run.status == RunStatus.QUEUED else "running"), None, None


class Watcher:
    """Follows one request and prints its progress until it finishes or is deferred."""

    def __init__(
        self,
        rt: Runtime,
        request_id: str,
        connection_id: str,
        entity_types: Sequence[str],
        *,
        timeout_s: float,
        out: TextIO = sys.stdout,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rt = rt
        self._request_id = request_id
        self._connection_id = connection_id
        self._entity_types = list(entity_types)
        self._timeout_s = timeout_s
        self._out = out
        self._live = out.isatty() if live is None else live
        self._clock = clock
        self._drawn = 0
        self._shown: dict[str, tuple[str, str | None]] = {}
        self._moved: dict[str, tuple[float, int]] = {}  # last time pages changed, and pages

    def wait(self) -> Outcome:
        started = self._clock()
        deadline = started + self._timeout_s
        while True:
            now = self._clock()
            progress = snapshot(self._rt, self._request_id, self._connection_id, self._entity_types)
            self._show(progress)
            if all(p.finished for p in progress):
                return Outcome(runs=[p.run for p in progress if p.run is not None])
            open_ = [p for p in progress if not p.finished]
            if all(self._deferred(p, now, deadline) for p in open_):
                return Outcome(deferred=open_)
            if now >= deadline:
                return Outcome(deferred=open_, timed_out=True)
            time.sleep(POLL_S)

    def _deferred(self, p: Progress, now: float, deadline: float) -> bool:
        seen_at, pages = self._moved.get(p.entity_type, (now, p.pages))
        if p.pages != pages:
            seen_at = now
        self._moved[p.entity_type] = (seen_at, p.pages)
        if p.state not in _HELD:
            return False
        if p.state == NO_BEAT:
            return True
        if p.until is not None:
            left = parse_instant(p.until).timestamp() - datetime.now(UTC).timestamp()
            if now + left > deadline:
                return True  # held back past the remaining timeout
        return now - seen_at >= PATIENCE_S

    def _show(self, progress: list[Progress]) -> None:
        wall = datetime.now(UTC).timestamp()
        if self._live:
            if self._drawn:
                self._out.write(f"\x1b[{self._drawn}F")
            for p in progress:
                self._out.write("\x1b[2K" + p.line(wall) + "\n")
            self._drawn = len(progress)
            self._out.flush()
            return
        for p in progress:
            if self._shown.get(p.entity_type) != p.key():
                self._shown[p.entity_type] = p.key()
                print(p.line(wall), file=self._out, flush=True)
