"""Beat's absence: the worker's one warning, the operator's notice (pure parts)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from worker.celeryapp.beat import BeatState, BeatWatch


def _watch() -> BeatWatch:
    return BeatWatch(client=None, stale_s=120.0)  # type: ignore[arg-type]  # check() only


def test_the_warning_comes_once_per_absence_and_not_before_the_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = _watch()
    with caplog.at_level(logging.INFO, logger="entity_sync"):
        watch.check(None, watched_s=30)  # a worker just started: beat may be starting too
        assert not watch.warned
        for watched in (121, 150, 400):
            watch.check(None, watched_s=watched)
        assert watch.warned
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "celery beat is not running (last heartbeat: never)" in warnings[0].getMessage()
        watch.check(5.0, watched_s=410)  # beat is back
        assert not watch.warned
        watch.check(200.0, watched_s=800)  # and gone again: one more warning
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "200 s ago" in warnings[1].getMessage()


def test_a_fresh_heartbeat_never_warns(caplog: pytest.LogCaptureFixture) -> None:
    watch = _watch()
    with caplog.at_level(logging.INFO, logger="entity_sync"):
        for watched in range(0, 1000, 10):
            watch.check(8.0, watched_s=watched)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (BeatState(running=True, last_seen_s=3.0, waiting=4), None),
        (BeatState(running=None, last_seen_s=None, waiting=4), None),  # Redis did not answer
        (BeatState(running=False, last_seen_s=None, waiting=0), None),  # nothing waits for it
        (BeatState(running=False, last_seen_s=None, waiting=2), "2 parked job(s)"),
    ],
)
def test_the_notice_only_when_parked_work_waits_for_a_missing_beat(
    state: BeatState, expected: Any
) -> None:
    notice = state.notice()
    if expected is None:
        assert notice is None
    else:
        assert notice is not None and expected in notice and "make beat" in notice
