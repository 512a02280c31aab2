"""Refusals of the receiver, logged by the minute instead of one line each.

A hostile or broken client can be refused thousands of times a minute; a
WARNING per refusal then floods the log and hides what matters. Within a
window (60 s), the first refusal of each HTTP status is logged at once with
its peer and reason, and the rest are counted; when the window ends, one line
says how many more there were, by status, and from how many peers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

WINDOW_S = 60.0
MAX_PEERS = 10_000  # distinct peers remembered per window (a bound on memory)


class RefusalLog:
    """Counts refusals per window; logs the first of each status and a summary (module doc)."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._counts: dict[int, int] = {}
        self._peers: set[str] = set()

    def note(self, status: int, reason: str, peer: str) -> None:
        """One refusal: logged now if it is the first of its status in this window."""
        with self._lock:
            summary = self._roll()
            seen = self._counts.get(status, 0)
            self._counts[status] = seen + 1
            if len(self._peers) < MAX_PEERS:
                self._peers.add(peer)
        if summary:
            self._log.warning(summary)
        if seen == 0:
            self._log.warning(
                "refused a webhook from %s: %d %s (more of this status in the next %.0f s "
                "are counted, not logged)",
                peer,
                status,
                reason,
                self._window_s,
                extra={"http_status": status},
            )

    def flush(self, *, final: bool = False) -> None:
        """Log the summary of a window that has ended (a timer calls it); ``final``: any."""
        with self._lock:
            summary = self._roll(force=final)
        if summary:
            self._log.warning(summary)

    def _roll(self, *, force: bool = False) -> str | None:
        now = self._clock()
        if not force and now - self._started < self._window_s:
            return None
        suppressed = {status: n - 1 for status, n in sorted(self._counts.items()) if n > 1}
        peers = len(self._peers)
        elapsed = now - self._started
        self._started, self._counts, self._peers = now, {}, set()
        if not suppressed:
            return None
        total = sum(suppressed.values())
        by_status = ", ".join(f"{status} x{n}" for status, n in suppressed.items())
        return (
            f"refused {total} more webhook request(s) in the last {elapsed:.0f} s "
            f"from {peers} peer(s): {by_status}"
        )
