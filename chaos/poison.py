"""A poison job: every delivery kills the worker process running it.

The product has no such bug to trigger, so ``chaos.worker`` makes one: every
``sync_entity`` job of the connection ``poison`` SIGKILLs its pool child
after the task counted the delivery. The broker hands the message out again
(``task_reject_on_worker_lost``); past ``MAX_DELIVERIES`` it must be
dead-lettered (a failed run, kind ``poison``, with the reason) while a
healthy job sent alongside completes.
"""

from __future__ import annotations

import time

from chaos.harness import CaseResult, default_settings, stack, succeeded
from harness.testing.processes import wait_for
from worker.jobs import SYNC_ENTITY


def run(*, max_deliveries: int = 3, timeout: float = 120) -> CaseResult:
    result = CaseResult(
        fault="Poison job (kills its worker on every delivery)",
        scale=f"MAX_DELIVERIES={max_deliveries}, one healthy job alongside",
    )
    with stack(**default_settings(ENTITY_SYNC_MAX_DELIVERIES=str(max_deliveries))) as s:
        s.connection("poison", {"seed": 1, "sizes": {"assets": 300}}, ("assets",))
        token = s.connection("healthy", {"seed": 2, "sizes": {"assets": 900}}, ("assets",))
        worker = s.worker("w", concurrency=2, CHAOS_POISON_CONNECTION="poison")
        client = s.client()
        started = time.monotonic()
        task_id = client.send(SYNC_ENTITY, {"connection_id": "poison", "entity_type": "assets"})
        healthy = client.sync_connection("healthy")
        dead = wait_for(
            lambda: [r for r in s.store.recent_runs(status="failed") if r.error_kind == "poison"],
            timeout,
            "the poison job dead-lettered",
            worker,
        )
        took = time.monotonic() - started
        from worker.ops.status import wait_for_request

        [healthy_run] = wait_for_request(s.store, healthy, ["assets"], timeout_s=timeout)
        log = worker.log()
        received = log.count(f"sync_entity[{task_id}] received")
        lost = log.count("WorkerLostError")
        result.injected = max(0, received - 1)  # every delivery but the dead-lettering one
        audit = s.audit("healthy", token, ("assets",))
        result.records_checked = audit.checked
        result.records_lost = audit.lost
        result.stale = audit.stale
        result.duplicates = audit.duplicate_rows + audit.extra
        result.survived = (
            len(dead) == 1
            and received == max_deliveries + 1
            and succeeded([healthy_run])
            and audit.clean
            and worker.alive()
            and lost > 0
        )
        result.outcome = (
            f"delivered {received} times, {received - 1} worker deaths, then dead-lettered "
            f"after {took:.0f} s (run {dead[0].status}, kind {dead[0].error_kind}); "
            f"healthy job: {healthy_run.status}"
        )
        result.notes.append(f"dead-letter reason: {dead[0].error_message}")
    return result
