"""Request statistics per token, for tests and benchmarks to assert on."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# A long demo must not grow memory without bound; older entries are counted as dropped.
MAX_LOGGED = 100_000
NO_TOKEN = "(none)"  # noqa: S105 - a stats label, not a secret


@dataclass
class _TokenStats:
    total: int = 0
    inside_retry_after: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    by_entity: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    by_path_status: Counter[str] = field(default_factory=Counter)
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_LOGGED))
    dropped: int = 0


class Stats:
    """Thread-safe counters and a request log per presented token."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget everything and restart the clock."""
        with self._lock:
            self._started = time.monotonic()
            self._tokens: dict[str, _TokenStats] = {}

    def record(
        self, token: str | None, path: str, entity: str | None, status: int, inside: bool
    ) -> None:
        """Count one answered request. ``status`` 0 means the socket was closed unanswered."""
        key = token or NO_TOKEN
        entry = {
            "t": round(time.monotonic() - self._started, 6),
            "wall": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "path": path,
            "entity": entity,
            "status": status,
            "inside_retry_after": inside,
        }
        with self._lock:
            stats = self._tokens.setdefault(key, _TokenStats())
            stats.total += 1
            stats.inside_retry_after += inside
            stats.by_path[path] += 1
            if entity is not None:
                stats.by_entity[entity] += 1
            stats.by_status[str(status)] += 1
            stats.by_path_status[f"{path} {status}"] += 1
            if len(stats.log) == MAX_LOGGED:
                stats.dropped += 1
            stats.log.append(entry)

    def snapshot(self) -> dict[str, Any]:
        """All counters as plain JSON-ready data."""
        with self._lock:
            return {
                "uptime_s": round(time.monotonic() - self._started, 6),
                "tokens": {
                    token: {
                        "total": s.total,
                        "inside_retry_after": s.inside_retry_after,
                        "by_path": dict(s.by_path),
                        "by_entity": dict(s.by_entity),
                        "by_status": dict(s.by_status),
                        "by_path_status": dict(s.by_path_status),
                        "requests": list(s.log),
                        "dropped": s.dropped,
                    }
                    for token, s in self._tokens.items()
                },
            }
