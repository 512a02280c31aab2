"""PostgreSQL restarted mid-sync (a private cluster, stopped in ``immediate`` mode).

No cursor may move past an uncommitted page: the source does not change
during the run, so the interrupted run alone, with no later sync, must leave
the store equal to the upstream.
"""

from __future__ import annotations

import time

from chaos.common import apply_audit, describe, finished, pages_of
from chaos.harness import CaseResult, default_settings, log, stack, succeeded
from harness.testing.processes import wait_for

ENTITIES = ("assets", "work-orders")


def run(*, restarts: int = 3, down_s: float = 2.0) -> CaseResult:
    result = CaseResult(
        fault="PostgreSQL restarted mid-sync",
        scale=f"{restarts} crash-restarts (immediate stop, {down_s:g} s down) during one run",
    )
    with stack(postgres=True, **default_settings()) as s:
        assert s.postgres is not None
        spec = {"seed": 41, "sizes": {"assets": 4000, "work-orders": 2000}, "latency_ms": 10}
        token = s.connection("pgr", spec, ENTITIES)
        worker = s.worker("w", pool="threads", concurrency=4)
        request = s.client().sync_connection("pgr")
        seen = 0
        for n in range(restarts):
            wait_for(lambda at=seen: pages_of(s, request) >= at + 6, 180, "pages", worker)
            s.postgres.restart(down_s=down_s)
            result.injected += 1
            seen = pages_of(s, request)
            log(f"postgres restart {n + 1} at {seen} pages")
        runs = None
        deadline = time.monotonic() + 240
        while runs is None and time.monotonic() < deadline:
            runs = finished(s, request, ENTITIES)
            time.sleep(0.5)
        audit = s.audit("pgr", token, ENTITIES)  # no later sync: the run alone
        apply_audit(result, audit)
        cursor_ok = all(_cursor_within(s, e) for e in ENTITIES)
        result.survived = bool(runs) and succeeded(runs or []) and audit.clean and cursor_ok
        result.outcome = (
            f"the run {'finished: ' + describe(runs) if runs else 'never finished'}; "
            f"store {'equals' if audit.clean else 'DIFFERS FROM'} the upstream without another sync"
            f"; cursors {'within' if cursor_ok else 'PAST'} the stored records"
        )
        retries = worker.log().count("store:")
        result.notes.append(f"worker log lines naming the store error: {retries}")
    return result


def _cursor_within(s, entity: str) -> bool:  # type: ignore[no-untyped-def]
    cursor = s.store.get_cursor("pgr", entity)
    newest = max((r.updated_at for r in s.store.records("pgr", entity)), default=None)
    return cursor is None or (newest is not None and cursor <= newest)
