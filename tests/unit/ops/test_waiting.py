"""`sync --wait`'s display and its states (pure parts; the CLI test runs the real thing)."""

from __future__ import annotations

import io

from worker.ops.status import Health
from worker.ops.waiting import Progress, Watcher, _progress
from worker.store import ParkedJob, Run, RunStatus

UNTIL = "2030-01-01T00:00:10.000000Z"


def _run(status: str, pages: int = 3) -> Run:
    return Run(id="r", connection_id="c", entity_type="assets", status=status,
               started_at="2030-01-01T00:00:00.000000Z", pages=pages, records=60)  # fmt: skip


def _job(reason: str = "paused: 429 RATE_LIMIT_EXCEEDED") -> ParkedJob:
    return ParkedJob(connection_id="c", entity_type="assets", run_id="r", due_at=UNTIL,
                     reason=reason, payload_json="{}")  # fmt: skip


def test_states() -> None:
    healthy, paused = Health("healthy"), Health("paused", UNTIL, "429")
    opened = Health("open", UNTIL, "unavailable: probe failed")
    deferred = _run(RunStatus.DEFERRED)
    assert _progress("assets", None, None, healthy, True, False).state == "queued"
    assert _progress("assets", _run(RunStatus.RUNNING), None, healthy, True, False).state == (
        "running"
    )
    p = _progress("assets", deferred, _job(), paused, True, False)
    assert (p.state, p.until, p.reason) == ("paused", UNTIL, "paused: 429 RATE_LIMIT_EXCEEDED")
    p = _progress("assets", deferred, _job("connection open: 503 OFFLINE"), opened, True, False)
    assert p.state == "breaker open" and p.reason == "connection open: 503 OFFLINE"
    # No beat, and no worker holds a resume for it: it waits for beat.
    p = _progress("assets", deferred, _job(), paused, False, False)
    assert p.state == "parked, beat not running" and "will not resume until beat runs" in (
        p.reason or ""
    )
    # No beat, but a worker resumes it by itself: just paused.
    assert _progress("assets", deferred, _job(), paused, False, True).state == "paused"
    halted = Health("halted", None, "auth: 401")
    assert _progress("assets", deferred, _job(), halted, True, False).state == "halted"
    done = _progress("assets", _run(RunStatus.SUCCEEDED), None, healthy, True, False)
    assert done.finished and done.state == "succeeded"


def test_a_terminal_gets_one_line_per_entity_type_redrawn_in_place() -> None:
    out = io.StringIO()
    watcher = Watcher(None, "req", "c", ["assets", "sites"], timeout_s=1, out=out, live=True)  # type: ignore[arg-type]
    first = [Progress("assets", "running", pages=1), Progress("sites", "queued")]
    watcher._show(first)
    watcher._show([Progress("assets", "running", pages=2), Progress("sites", "running")])
    text = out.getvalue()
    assert text.count("\x1b[2F") == 1  # back up two lines, once, before the second frame
    assert text.count("\n") == 4


def test_without_a_terminal_a_line_per_change_of_state_only() -> None:
    out = io.StringIO()
    watcher = Watcher(None, "req", "c", ["assets"], timeout_s=1, out=out, live=False)  # type: ignore[arg-type]
    for pages in range(5):
        watcher._show([Progress("assets", "running", pages=pages)])
    watcher._show([Progress("assets", "paused", until=UNTIL, reason="429")])
    watcher._show([Progress("assets", "running", pages=6)])
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["running", "paused", "running"]
    assert "\x1b" not in out.getvalue()
