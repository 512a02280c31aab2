"""Is celery beat running? Its heartbeat, and the worker that notices it missing.

Beat writes the time of its latest tick to Redis (``BEAT_HEARTBEAT``) at most
every ``HEARTBEAT_EVERY_S``. Redis rather than the store: the heartbeat is
coordination that may be lost (a flushed Redis has it back within seconds),
every reader (worker, ``status``, the dashboard, ``sync --wait``) already
talks to Redis, and a write every few seconds forever would be needless load
on a single-writer SQLite store.

Without beat, a worker still resumes jobs parked for a short while by itself
(``worker.sync.recovery.plan_self_resume``); long deferrals, schedules, probes, the
outbox sweep and the stalled-run rescue wait for beat. A worker that sees no
heartbeat for ``beat_stale_seconds`` says so once in its log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery.beat import PersistentScheduler

from worker.coordination import redis_keys
from worker.coordination.client import redis_client
from worker.logs import log
from worker.settings import Settings, get_settings
from worker.store import ParkedJob
from worker.sync.recovery import self_resuming

HEARTBEAT_EVERY_S = 10.0  # at most; more often when beat_stale_seconds is short
HEARTBEAT_TTL_S = 86_400  # long enough to say "last seen at", short enough to vanish
BEAT_HINT = "start it: `make beat`, or `celery -A worker beat`"


def write_heartbeat(client: redis.Redis) -> None:
    """Record that beat is alive now (Redis's clock, the one every reader compares to)."""
    seconds, micros = client.time()
    client.set(redis_keys.BEAT_HEARTBEAT, f"{seconds + micros / 1e6:.3f}", ex=HEARTBEAT_TTL_S)


def beat_age(client: redis.Redis) -> float | None:
    """Seconds since beat's last heartbeat; None when it never wrote one (or Redis lost it)."""
    pipe = client.pipeline(transaction=False)
    pipe.get(redis_keys.BEAT_HEARTBEAT)
    pipe.time()
    raw, (seconds, micros) = pipe.execute()
    if raw is None:
        return None
    return max(0.0, float(seconds) + float(micros) / 1e6 - float(raw))


@dataclass(frozen=True)
class BeatState:
    """Whether beat runs, and how many parked jobs wait for it."""

    running: bool | None  # None: Redis did not answer
    last_seen_s: float | None
    waiting: int  # parked jobs no worker resumes by itself

    def notice(self) -> str | None:
        """What to tell an operator, or None when nothing waits for a missing beat."""
        if self.running is not False or not self.waiting:
            return None
        seen = "never" if self.last_seen_s is None else f"{self.last_seen_s:.0f} s ago"
        return (
            f"celery beat is not running (last heartbeat: {seen}): {self.waiting} parked "
            f"job(s) will not resume until beat runs; {BEAT_HINT}"
        )


def beat_state(client: redis.Redis, settings: Settings, parked: Sequence[ParkedJob]) -> BeatState:
    """Beat's state and the parked jobs that need it (never raises on a Redis outage)."""
    try:
        age = beat_age(client)
        own = self_resuming(client)
    except redis.RedisError:
        return BeatState(None, None, 0)
    running = age is not None and age <= settings.beat_stale_seconds
    waiting = sum((job.connection_id, job.entity_type) not in own for job in parked)
    return BeatState(running, age, waiting)


def beat_running(client: redis.Redis, settings: Settings) -> bool | None:
    """True or False; None when Redis does not answer (then nobody can tell)."""
    try:
        age = beat_age(client)
    except redis.RedisError:
        return None
    return age is not None and age <= settings.beat_stale_seconds


class HeartbeatScheduler(PersistentScheduler):  # type: ignore[misc]
    """Celery's file-backed scheduler, writing beat's heartbeat as it ticks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: redis.Redis | None = None
        self._last_heartbeat = 0.0
        # Several heartbeats per staleness window, so readers never see a gap.
        self._every_s = min(HEARTBEAT_EVERY_S, get_settings().beat_stale_seconds / 4)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        wait = float(super().tick(*args, **kwargs))
        now = time.monotonic()
        if now - self._last_heartbeat >= self._every_s:
            self._last_heartbeat = now
            try:
                if self._client is None:
                    self._client = redis_client(get_settings().redis_url)
                write_heartbeat(self._client)
            except redis.RedisError as exc:
                log.warning("beat could not write its heartbeat to Redis: %s", exc)
        return min(wait, self._every_s)


class BeatWatch:
    """A worker's thread that warns once when beat's heartbeat goes missing."""

    def __init__(self, client: redis.Redis, *, stale_s: float, check_every_s: float = 5.0) -> None:
        self._client = client
        self._stale_s = stale_s
        self._check_every_s = min(check_every_s, stale_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="beat-watch", daemon=True)
        self.warned = False

    def start(self) -> BeatWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self._check_every_s):
            try:
                age = beat_age(self._client)
            except redis.RedisError:
                continue  # Redis trouble is reported by the tasks; beat may be fine
            self.check(age, time.monotonic() - started)

    def check(self, age: float | None, watched_s: float) -> None:
        """Warn once per absence: no heartbeat for ``stale_s`` (nor since this worker began)."""
        missing = age is None or age > self._stale_s
        if missing and not self.warned and watched_s >= self._stale_s:
            self.warned = True
            seen = "never" if age is None else f"{age:.0f} s ago"
            log.warning(
                "celery beat is not running (last heartbeat: %s): jobs parked for longer "
                "than a minute, scheduled syncs, probes of halted connections, the outbox "
                "sweep and the rescue of stalled runs will not happen until it runs; %s",
                seen,
                BEAT_HINT,
            )
        elif not missing and self.warned:
            self.warned = False
            log.info("celery beat is running again")


def watch_beat(settings: Settings) -> BeatWatch:
    """Start watching beat's heartbeat in this (worker) process."""
    return BeatWatch(redis_client(settings.redis_url), stale_s=settings.beat_stale_seconds).start()
