"""Reading breakers for humans and scrapes: every level's state, without deciding anything.

Split from ``worker/resilience/breaker.py``, which decides (admit, record,
transitions); this module only reads what those scripts stored.
``show`` reads one connection in one transaction; ``show_many`` reads many
with one read-only script each (``lua/show.lua``), pipelined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import redis

from worker.coordination import redis_keys
from worker.coordination.scripts import Clock, LuaScript, coordination, now_arg, text
from worker.resilience.breaker_types import BreakerView, LevelView, State
from worker.resilience.limits import lua


class BreakerReader:
    """Reads the stored state of every level of a connection's breakers."""

    def __init__(
        self, client: redis.Redis, *, bucket_s: float, buckets: int, now_override: Clock | None
    ) -> None:
        self.redis = client
        self.bucket_s, self.buckets = bucket_s, buckets  # the failure window's shape
        self.now_override = now_override
        self._show = LuaScript(client, lua("show"))

    def show(self, connection_id: str) -> BreakerView:
        """Every level's stored state, for humans. Two reads, not atomic."""
        index = redis_keys.entity_index(connection_id)
        with coordination(f"show {connection_id}"):
            entities = sorted(text(m) for m in self.redis.smembers(index))
            levels = [("connection", redis_keys.connection_level(connection_id))]
            levels += [(e, redis_keys.entity_level(connection_id, e)) for e in entities]
            pipe = self.redis.pipeline(transaction=True)
            pipe.time()
            pipe.hgetall(redis_keys.pause(connection_id))
            for _, lk in levels:
                pipe.hgetall(lk.state)
                pipe.hgetall(lk.window)
                pipe.get(lk.probe)
            replies = pipe.execute()
        seconds, micros = replies[0]
        now = self.now_override() if self.now_override else seconds + micros / 1e6
        pause = {text(k): text(v) for k, v in replies[1].items()}
        paused_until = float(pause["until"]) if "until" in pause else None
        views = [
            self._view(name, now, *replies[2 + 3 * i : 5 + 3 * i])
            for i, (name, _) in enumerate(levels)
        ]
        return BreakerView(
            connection_id=connection_id,
            now=now,
            connection=views[0],
            paused_until=paused_until if paused_until and paused_until > now else None,
            pause_reason=pause.get("reason", "") if paused_until and paused_until > now else "",
            entity_types=tuple(views[1:]),
        )

    def show_many(
        self, connection_ids: Sequence[str], *, chunk: int = 500
    ) -> dict[str, BreakerView]:
        """``show`` for many connections: one round trip per ``chunk`` connections.

        One read-only script per connection (``lua/show.lua``), pipelined, each
        answering one string, so a scrape of 1,000 connections costs a few
        round trips instead of two per connection. Each view has the connection
        level and the entity levels that say something (not closed, failures
        in the window or in a row); a quiet closed level is left out, which
        ``health_of`` reads exactly as it reads the level ``show`` returns.
        Raises CoordinationError when Redis does not answer.
        """
        views: dict[str, BreakerView] = {}
        window = [now_arg(self.now_override), repr(self.bucket_s), str(self.buckets)]
        for start in range(0, len(connection_ids), chunk):
            ids = connection_ids[start : start + chunk]
            with coordination(f"show {len(ids)} connections"):
                pipe = self.redis.pipeline(transaction=False)
                for connection_id in ids:
                    keys = [
                        *redis_keys.connection_level(connection_id).all(),
                        redis_keys.pause(connection_id),
                        redis_keys.entity_index(connection_id),
                    ]
                    self._show(keys=keys, args=window, client=pipe)
                replies = pipe.execute()
            for connection_id, reply in zip(ids, replies, strict=True):
                views[connection_id] = _compact_view(connection_id, text(reply).split("\x1f"))
        return views

    def _view(self, level: str, now: float, state: Any, window: Any, probe: Any) -> LevelView:
        s = {text(k): text(v) for k, v in state.items()}
        oldest = math.floor(now / self.bucket_s) - self.buckets
        calls = failures = 0
        for field_name, count in window.items():
            name = text(field_name)
            if int(name[2:]) > oldest:
                if name.startswith("c:"):
                    calls += int(count)
                else:
                    failures += int(count)
        probe_exp = float(text(probe).split(" ", 1)[0]) if probe else 0.0
        return LevelView(
            level=level,
            state=State(s.get("state", "closed")),
            since=until_of(s.get("since", "")),
            until=until_of(s.get("until", "")),
            reason=s.get("reason", ""),
            generation=int(s.get("gen", 0)),
            openings=int(s.get("openings", 0)),
            consecutive_failures=int(s.get("consec", 0)),
            calls=calls,
            failures=failures,
            probe_held=probe_exp > now,
        )


def until_of(raw: Any) -> float | None:
    """A stored instant (unix seconds as text), or None for empty or zero."""
    value = text(raw)
    return float(value) if value and float(value) > 0 else None


def _compact_view(connection_id: str, reply: list[str]) -> BreakerView:
    """A BreakerView from the fields of ``lua/show.lua``'s answer."""
    now = float(reply[0])
    paused_until = float(reply[1]) if reply[1] else None
    levels = []
    for i in range(3, len(reply), 11):
        f = reply[i : i + 11]
        levels.append(
            LevelView(
                level=f[0],
                state=State(f[1]),
                since=until_of(f[2]),
                until=until_of(f[3]),
                reason=f[4],
                generation=int(f[5]),
                openings=int(f[6]),
                consecutive_failures=int(f[7]),
                calls=int(f[8]),
                failures=int(f[9]),
                probe_held=float(f[10]) > now,
            )
        )
    paused = paused_until is not None and paused_until > now
    return BreakerView(
        connection_id=connection_id,
        now=now,
        connection=levels[0],
        paused_until=paused_until if paused else None,
        pause_reason=reply[2] if paused else "",
        entity_types=tuple(levels[1:]),
    )
