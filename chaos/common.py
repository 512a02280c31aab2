"""Small pieces several cases use: progress of a request, filling a result from an audit."""

from __future__ import annotations

import time

from chaos.harness import Audit, CaseResult, Stack
from worker.errors import StoreError
from worker.ops.status import wait_for_request
from worker.store import Run


def pages_of(s: Stack, request_id: str) -> int:
    for _ in range(3):  # our own connection may meet a restarted PostgreSQL once
        try:
            return sum(run.pages for run in s.store.runs_for_request(request_id))
        except StoreError:
            time.sleep(0.5)
    return sum(run.pages for run in s.store.runs_for_request(request_id))


def finished(s: Stack, request_id: str, entities: tuple[str, ...]) -> list[Run] | None:
    """The deciding runs of a request, or None while it is still going."""
    try:
        return wait_for_request(s.store, request_id, entities, timeout_s=0, poll_s=0)
    except (TimeoutError, StoreError):
        return None


def apply_audit(result: CaseResult, audit: Audit) -> None:
    result.records_checked += audit.checked
    result.records_lost += audit.lost
    result.stale += audit.stale
    result.duplicates += audit.duplicate_rows + audit.extra


def describe(runs: list[Run]) -> str:
    return ", ".join(
        f"{r.entity_type} {r.status}"
        + (f" ({r.error_kind}: {r.error_message})" if r.error_kind else "")
        for r in runs
    )
