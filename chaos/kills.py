"""SIGKILL the worker at chosen points of a sync, many times in a row.

Points (see ``chaos.worker``): between fetch and commit, during the commit
(records and cursor written, COMMIT not sent), after the commit before the
slice concludes, and after the task returned but before its acknowledgement.
A third of the kills take the whole worker (main process, pool, beat) and a
new one is started; the others kill the pool child running the task. The
source changes between kills. Afterwards every requested run must have
succeeded and, after one more clean incremental sync, the store must equal
the upstream.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter

from chaos.harness import CaseResult, Stack, default_settings, log, stack, succeeded
from harness.testing.processes import wait_for
from worker.ops.status import wait_for_request
from worker.store import Run, RunStatus

RECEIVED = re.compile(r"sync_entity\[([0-9a-f-]{36})\] received")
POINTS = ("before_commit", "during_commit", "after_commit", "before_ack")
ENTITIES = ("assets", "work-orders")


def _finished(s: Stack, request_id: str) -> list[Run] | None:
    try:
        return wait_for_request(s.store, request_id, ENTITIES, timeout_s=0, poll_s=0)
    except TimeoutError:
        return None


def run(*, kills: int = 20, postgres: bool = False, seed: int = 7) -> CaseResult:
    store_name = "PostgreSQL" if postgres else "SQLite"
    result = CaseResult(
        fault=f"SIGKILL mid-sync ({store_name})",
        scale=f"{kills} kills in a row, 4 points, 1 in 3 the whole worker",
    )
    rng = random.Random(seed)
    plan = [(POINTS[i % 4], "worker" if i % 3 == 2 else "child") for i in range(kills)]
    rng.shuffle(plan)
    with stack(postgres=postgres, **default_settings(ENTITY_SYNC_VISIBILITY_TIMEOUT="10")) as s:
        spec = {"seed": 21, "sizes": {"assets": 3000, "work-orders": 1500}, "latency_ms": 10}
        token = s.connection("crashy", spec, ENTITIES)
        worker = s.worker("w0", concurrency=2)
        client = s.client()
        requests = [client.sync_connection("crashy")]
        done: Counter[str] = Counter()
        for n, (point, scope) in enumerate(plan):
            s.sandbox.mutate(
                token, updates=8, deletes=1, inserts=4, entities=[rng.choice(ENTITIES)]
            )
            time.sleep(rng.uniform(0.0, 0.6))
            fired_before = len(s.fired())
            s.arm(point, scope)
            deadline = time.monotonic() + 120
            idle_since = time.monotonic()
            while len(s.fired()) == fired_before:
                if time.monotonic() > deadline:
                    raise AssertionError(f"kill {n} ({point}) never fired\n{worker.log()[-3000:]}")
                # Nothing left to kill (the run ended, or its task was lost): sync again.
                idle = time.monotonic() - idle_since > 20
                if idle or _finished(s, requests[-1]) is not None:
                    requests.append(client.sync_connection("crashy", full=n % 2 == 0))
                    idle_since = time.monotonic()
                time.sleep(0.05)
            result.injected += 1
            log(f"kill {n}: {point}/{scope} fired")
            done[f"{point}/{scope}"] += 1
            if scope == "worker":
                assert worker.proc is not None
                worker.proc.wait(15)
                worker = s.worker(f"w{n + 1}", concurrency=2)
            else:
                wait_for(lambda w=worker: len(w.child_pids()) >= 3, 30, "pool refilled", worker)
        s.disarm()
        log("kills done; waiting for the runs")
        outcomes = [s.wait_request(r, ENTITIES, 120) for r in requests]
        unfinished = [
            _missing(s, r) for r, rs in zip(requests, outcomes, strict=True) if rs is None
        ]
        failed = list(
            {run.id: run for rs in outcomes for run in rs or [] if not succeeded([run])}.values()
        )
        log("runs done; final sync")
        final: list[Run] = []
        for _ in range(6):
            final = s.wait_request(s.client().sync_connection("crashy"), ENTITIES, 180) or []
            # A final sync sent while a killed task's lease has not expired yet
            # is skipped into that task's run, which the poison cap may then
            # dead-letter: nothing would have read the source after the kills.
            if not any(run.status == RunStatus.SKIPPED for run in final):
                break
            time.sleep(5)
        audit = s.audit("crashy", token, ENTITIES)
        _fill(result, audit, failed, final, requests, done, s)
        if unfinished:
            result.survived = False
            result.outcome += f"; {len(unfinished)} request(s) NEVER FINISHED"
            result.notes.append(
                "requests that never finished (no run at all for: "
                + "; ".join(unfinished)
                + "): the sync_entity message was taken from the queue by a worker that was "
                "then SIGKILLed before kombu recorded it as unacknowledged (its Redis transport "
                "pops with BRPOP, then writes the unacked hash: celery/kombu#305), so no "
                "visibility timeout brings it back"
            )
    return result


def _missing(s: Stack, request_id: str) -> str:
    started = {r.entity_type for r in s.store.runs_for_request(request_id)}
    return ", ".join(e for e in ENTITIES if e not in started) or "every type started"


def _fill(
    result: CaseResult,
    audit: object,
    failed: list[Run],
    final: list[Run],
    requests: list[str],
    done: Counter[str],
    s: Stack,
) -> None:
    from chaos.harness import Audit

    assert isinstance(audit, Audit)
    result.records_checked = audit.checked
    result.records_lost = audit.lost
    result.stale = audit.stale
    result.duplicates = audit.duplicate_rows + audit.extra
    # One message killed MAX_DELIVERIES (5) times in a row is what the poison cap
    # is for: dead-lettering it then is the designed outcome, not a loss.
    # Deliveries per message, from every worker's log: a whole-worker kill takes
    # every task of that worker along, not just the one that reached the point.
    deliveries: Counter[str] = Counter()
    for path in s.workdir.glob("*.log"):
        deliveries.update(RECEIVED.findall(path.read_text(errors="replace")))
    most = max(deliveries.values(), default=0)
    unexplained = [r for r in failed if not (r.error_kind == "poison" and most >= 6)]
    result.survived = audit.clean and not unexplained and succeeded(final)
    by_point = Counter(key.split("/")[0] for key in done.elements())
    whole = sum(v for k, v in done.items() if k.endswith("/worker"))
    result.outcome = (
        f"{len(requests)} sync requests across the kills: "
        + (
            "every run succeeded"
            if not failed
            else f"{len(failed)} run(s) failed"
            + (" (dead-lettered by the poison cap)" if not unexplained else "")
        )
        + f"; store {'equals' if audit.clean else 'DIFFERS FROM'} the upstream"
    )
    result.notes.append(
        "kills by point: "
        + ", ".join(f"{p} {by_point[p]}" for p in POINTS)
        + f"; {whole} whole-worker kills (restarted), {result.injected - whole} pool children"
    )
    result.notes.append(
        f"the most deliveries of one message: {most} (each but the last ended in a kill, "
        "its own or its worker's); the poison cap (MAX_DELIVERIES 5) dead-letters a "
        "message on its 6th delivery"
    )
    if failed:
        result.notes.append(
            "runs that did not succeed: "
            + "; ".join(
                f"{r.entity_type} {r.status} {r.error_kind}: {r.error_message}" for r in failed
            )
        )
