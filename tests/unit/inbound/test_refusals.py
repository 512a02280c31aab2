"""The receiver logs refusals by the window, not one line each (worker/inbound/refusals.py)."""

from __future__ import annotations

import logging

import pytest

from worker.inbound.refusals import RefusalLog


def test_the_first_refusal_of_each_status_is_logged_and_the_rest_summed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 19, finding 1: 488 WARNING lines in 2 min, one per refusal."""
    now = [100.0]
    logger = logging.getLogger("test.refusals")
    refusals = RefusalLog(logger, window_s=60, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="test.refusals")
    for i in range(500):
        refusals.note(401 if i % 2 else 408, "reason", f"10.0.0.{i % 7}")
        now[0] += 0.05  # 25 s in all: one window
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("refused a webhook from 10.0.0.0: 408 reason")
    assert lines[1].startswith("refused a webhook from 10.0.0.1: 401 reason")
    refusals.flush()  # the window has not ended: nothing yet
    assert len(caplog.records) == 2
    now[0] += 60
    refusals.flush()
    assert caplog.records[-1].getMessage() == (
        "refused 498 more webhook request(s) in the last 85 s from 7 peer(s): 401 x249, 408 x249"
    )
    refusals.flush(final=True)  # nothing new: nothing said
    assert len(caplog.records) == 3
    refusals.note(401, "again", "10.0.0.9")  # a new window: its first is logged again
    assert caplog.records[-1].getMessage().startswith("refused a webhook from 10.0.0.9: 401")
