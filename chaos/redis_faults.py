"""Redis (coordination and broker in one) restarted empty mid-sync, and gone for a while.

The suite's Redis keeps nothing on disk, so a restart is the worst case: the
breakers, pauses, leases, delivery counts *and the broker's queues* are gone.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

from chaos.common import apply_audit, describe, pages_of
from chaos.harness import CaseResult, default_settings, log, stack, succeeded
from harness.testing.processes import wait_for

ENTITIES = ("assets", "work-orders")
SPEC = {"seed": 31, "sizes": {"assets": 4000, "work-orders": 2000}, "latency_ms": 10}


def restart(*, restarts: int = 3) -> CaseResult:
    """Restart Redis empty several times while one sync request runs."""
    result = CaseResult(
        fault="Redis restarted (empty) mid-sync",
        scale=f"{restarts} restarts during one run, a few seconds apart",
    )
    with stack(**default_settings()) as s:
        token = s.connection("rr", SPEC, ENTITIES)
        worker = s.worker("w", pool="threads", concurrency=4)
        request = s.client().sync_connection("rr")
        stuck: list[str] = []
        seen = 0
        for n in range(restarts):
            # Progress between restarts (else a restart only tests an idle worker);
            # a run that makes none for 30 s was lost with the queue: start another.
            deadline = time.monotonic() + 30
            while pages_of(s, request) < seen + 6 and time.monotonic() < deadline:
                worker = s.supervise()
                time.sleep(0.2)
            if pages_of(s, request) < seen + 6:
                stuck.append(request)
                request = s.client().sync_connection("rr")
                wait_for(lambda r=request: pages_of(s, r) >= 6, 60, "pages", worker)
                seen = 0
            s.redis.restart()
            result.injected += 1
            seen = pages_of(s, request)
            log(f"redis restart {n + 1}: at {seen} pages")
        runs = s.wait_request(request, ENTITIES, 60)
        if runs is None:
            stuck.append(request)
        s.supervise()
        final_request = s.client().sync_connection("rr")
        final = s.wait_request(final_request, ENTITIES, 180) or []
        audit = s.audit("rr", token, ENTITIES)
        apply_audit(result, audit)
        result.survived = not stuck and not s.deaths and succeeded(final) and audit.clean
        result.outcome = (
            f"worker died {len(s.deaths)} times (restarted by the harness); "
            f"{len(stuck)} interrupted run(s) never finished; "
            f"a later sync {'succeeded' if succeeded(final) else 'FAILED'}"
        )
        _death_notes(result, s.deaths)
        if stuck:
            result.notes.append(_stuck_notes(s))
    return result


def outage(*, seconds: float = 20.0) -> CaseResult:
    """Redis unreachable for a while mid-sync: workers stay up, say so, resume.

    The server is frozen (SIGSTOP), not killed: a network partition or a hung
    host, where every call times out and Redis keeps its data; the restart case
    covers a Redis that comes back empty.
    """
    result = CaseResult(
        fault=f"Redis unreachable (frozen) for {seconds:g} s mid-sync",
        scale=f"{seconds:g} s outage" + ("" if seconds >= 60 else " (shortened; --long: 60 s)"),
    )
    with stack(**default_settings()) as s:
        token = s.connection("ro", SPEC, ENTITIES)
        worker = s.worker("w", pool="threads", concurrency=4)
        request = s.client().sync_connection("ro")
        wait_for(lambda: pages_of(s, request) >= 6, 120, "pages", worker)
        mark = len(worker.log())
        s.redis.freeze()
        frozen_at = time.time()
        result.injected = 1
        log(f"redis down for {seconds:g}s")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and worker.alive():
            time.sleep(0.5)
        stayed_up = worker.alive()
        while time.monotonic() < deadline:
            time.sleep(0.5)
        s.redis.thaw()
        log("redis reachable again")
        runs = s.wait_request(request, ENTITIES, 60)
        final_request = s.client().sync_connection("ro")
        final = s.wait_request(final_request, ENTITIES, 180) or []
        said = _said_during(worker.log()[mark:], frozen_at, frozen_at + seconds)
        audit = s.audit("ro", token, ENTITIES)
        apply_audit(result, audit)
        result.survived = (
            stayed_up and bool(said) and succeeded(runs or []) and succeeded(final) and audit.clean
        )
        result.outcome = (
            "worker "
            + ("stayed up" if stayed_up else "DIED at the outage (restarted by the harness)")
            + (
                f", said Redis was unreachable {said[0][0]:.1f} s into the outage"
                f" ({len(said)} log lines during it); "
                if said
                else ", said NOTHING about Redis during the outage; "
            )
            + f"interrupted run: {describe(runs) if runs else 'never finished'}; "
            f"a later sync {'succeeded' if succeeded(final) else 'FAILED'}"
        )
        _death_notes(result, s.deaths)
        if runs is None:
            result.notes.append(_stuck_notes(s))
        if said:
            result.notes.append(f"first outage log line: {said[0][1][:300]}")
    return result


def _said_during(log_text: str, start: float, end: float) -> list[tuple[float, str]]:
    """(seconds into the outage, line) of each worker log line about Redis inside it."""
    said = []
    for line in log_text.splitlines():
        if "redis" not in line.lower():
            continue
        try:
            at = datetime.fromisoformat(json.loads(line)["ts"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue  # not one of our JSON lines (the banner)
        if start <= at <= end:
            said.append((at - start, line))
    return said


def _death_notes(result: CaseResult, deaths: list[str]) -> None:
    if deaths:
        result.notes.append(f"worker death: {deaths[0]}")


def _stuck_notes(s) -> str:  # type: ignore[no-untyped-def]
    running = [r for r in s.store.recent_runs(limit=20) if r.status in ("running", "deferred")]
    return (
        f"{len(running)} run(s) left '{running[0].status if running else ''}' with no task "
        "to continue them: the broker's copy of their next task died with Redis"
    )
