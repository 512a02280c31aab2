"""A cap on how often one repeating problem becomes a Sentry event, per process.

A producer that sends malformed jobs in a loop, or a bug that every task
hits, would otherwise send one event per occurrence. Sentry groups them into
one issue but counts each against the project's quota, so one noisy source
could use up the quota that the rest of the service needs. The worker keeps
the first ``limit`` events of each kind in every window of ``window_s``
seconds, and drops the rest. The next event of that kind that does go out
says how many were dropped before it. The log still has every occurrence.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentry_sdk._types import Event

EVENTS_PER_KIND = 10
WINDOW_S = 60.0
_MAX_KINDS = 1_000  # the least recently seen kinds are forgotten first


@dataclass
class _Window:
    started: float
    sent: int = 0
    dropped: int = 0


class RepeatThrottle:
    """Admits at most ``limit`` events of one kind per window; thread-safe."""

    def __init__(
        self,
        *,
        limit: int = EVENTS_PER_KIND,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, kind: str) -> int | None:
        """None to drop this event; else how many of its kind were dropped before it."""
        now = self._clock()
        with self._lock:
            window = self._windows.get(kind)
            if window is None:
                window = self._windows[kind] = _Window(started=now)
            elif now - window.started >= self._window_s:
                window.started, window.sent = now, 0  # ``dropped`` waits to be told
            self._windows.move_to_end(kind)
            while len(self._windows) > _MAX_KINDS:
                self._windows.popitem(last=False)
            if window.sent >= self._limit:
                window.dropped += 1
                return None
            window.sent += 1
            dropped, window.dropped = window.dropped, 0
            return dropped


def kind_of(event: Event) -> str:
    """What makes two events the same problem, for the throttle.

    An explicit fingerprint first (transitions set one per connection and
    kind). Then a log record's message template, before its arguments are
    filled in, so every "job rejected: %s" is one kind. Then the innermost
    exception's type and the place it was raised.
    """
    fingerprint = event.get("fingerprint")
    if fingerprint:
        return "fingerprint:" + "|".join(str(part) for part in fingerprint)
    logentry = event.get("logentry") or {}
    if logentry.get("message"):
        return f"log:{event.get('logger', '')}:{logentry['message']}"
    values = (event.get("exception") or {}).get("values") or []
    if values:
        last = values[-1]
        frames = (last.get("stacktrace") or {}).get("frames") or [{}]
        where = f"{frames[-1].get('module', '')}.{frames[-1].get('function', '')}"
        return f"exception:{last.get('type', '')}:{where}"
    return f"message:{event.get('message', '')}"
