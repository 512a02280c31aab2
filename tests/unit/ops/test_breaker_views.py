"""One breaker view for `status` and the dashboard (worker/ops/status.BreakerViews)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.errors import CoordinationError
from worker.ops.status import UNKNOWN, BreakerViews
from worker.resilience.breaker_types import BreakerView, LevelView, State


def _level(name: str, state: State = State.CLOSED, failures: int = 0) -> LevelView:
    return LevelView(
        level=name,
        state=state,
        since=None,
        until=2000.0 if state is not State.CLOSED else None,
        reason="boom" if state is not State.CLOSED else "",
        generation=1,
        openings=0,
        consecutive_failures=failures,
        calls=10,
        failures=failures,
        probe_held=False,
    )


def _view(cid: str, *entity_types: LevelView) -> BreakerView:
    return BreakerView(
        connection_id=cid,
        now=1000.0,
        connection=_level("connection"),
        paused_until=None,
        pause_reason="",
        entity_types=entity_types,
    )


class _Breaker:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def show_many(self, ids: Sequence[str]) -> dict[str, BreakerView]:
        if self.fail:
            raise CoordinationError("Redis unreachable")
        return {cid: _view(cid, _level("assets", State.OPEN, failures=3)) for cid in ids}


def _read(breaker: Any, ids: list[str]) -> BreakerViews:
    return BreakerViews.read(breaker, ids)


def test_views_read_once_give_each_pairs_health() -> None:
    views = _read(_Breaker(), ["c1"])
    assert views.reachable
    health = views.health()
    assert health("c1", "assets").state == State.OPEN.label
    assert health("c1", "parts").state == State.CLOSED.label
    assert health("c2", "assets") is UNKNOWN  # a connection that was not read


def test_no_breaker_or_redis_down_is_unknown_everywhere() -> None:
    for breaker in (None, _Breaker(fail=True)):
        views = _read(breaker, ["c1"])
        assert not views.reachable
        assert views.views == {}
        assert views.health()("c1", "assets") is UNKNOWN
