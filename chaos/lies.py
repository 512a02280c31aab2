"""A lying upstream: full reads against answers that look complete and are not.

On SQLite and then PostgreSQL, many connections sync honestly, change
honestly (updates, soft deletes, a few keys deleted for real), then the
sandbox lies to most of them (harness/sandbox/lies.py: an empty answer, a
first page cut short, a lagging replica, the same while the status says
``inprogress``, records without ``key``), from a random list request of the
full read on and sometimes for one entity type only, while every connection
runs a full sync. Honest connections beside them only delete a few keys for
real. Survived when no record the source still has is marked deleted, every
run reaches a terminal state, and every honest connection's hard deletes are
applied. "records lost" counts the records falsely marked deleted: a consumer
mirroring deletions would lose them downstream.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from chaos.harness import CaseResult, default_settings, log, stack
from harness.testing.sandbox import running_sandbox
from worker.store import RunStatus, SqlStore

ENTITIES = ("assets", "work-orders", "sites")
RECONCILIATION = "reconciliation"  # records.deleted_by of a key a full read did not see
INPROGRESS = {"name": "sync_status", "sync_status": "inprogress"}
LIES: dict[str, list[dict[str, Any]]] = {
    "empty": [{"name": "empty"}],
    "cut_short": [{"name": "cut_short", "keep": 40}],
    "lagging_replica": [{"name": "lagging_replica", "share": 0.4}],
    "lagging_replica+inprogress": [{"name": "lagging_replica", "share": 0.4}, INPROGRESS],
    "keyless": [{"name": "keyless"}],
}


def _lie(rng: random.Random) -> tuple[str, list[dict[str, Any]]]:
    """A random lie, starting at a random list request, sometimes for one entity type."""
    name = rng.choice(sorted(LIES))
    start = rng.choice([1, 1, 2, 3, 5, 8])
    entity = rng.choice([None, None, *ENTITIES])
    scenarios = []
    for spec in LIES[name]:
        scoped = {"entity": entity} if entity and spec is not INPROGRESS else {}
        scenarios.append({**spec, "from_request": start, **scoped})
    return name, scenarios


def _reconciled(store: SqlStore, connection_id: str, entity: str) -> set[str]:
    deletions = store.deletions(connection_id, entity)
    return {key for key, (_, by) in deletions.items() if by == RECONCILIATION}


def run(*, connections: int = 8, honest: int = 2, seed: int = 19) -> CaseResult:
    rng = random.Random(seed)
    result = CaseResult(
        fault="A lying upstream on full reads (empty, cut short, lagging replica, keyless)",
        scale=f"{connections} lying + {honest} honest connections x {len(ENTITIES)} entity "
        "types, SQLite and PostgreSQL, honest changes then a full sync",
    )
    ended = True
    outcomes: list[str] = []
    false_by_lie: Counter[str] = Counter()
    lies_told: Counter[str] = Counter()
    honest_removed = honest_applied = 0
    with running_sandbox(preset="empty") as sandbox:
        for postgres in (False, True):
            backend = "PostgreSQL" if postgres else "SQLite"
            with stack(sandbox=sandbox, postgres=postgres, **default_settings()) as s:
                plan: list[tuple[str, str, str | None]] = []  # (connection, token, lie)
                for n in range(connections + honest):
                    # From 80 records on, what a lagging replica hides (60%) is past
                    # the mass-deletion guard (more than 10% and more than 20 live
                    # records): below it, a replica consistent with itself and a
                    # status saying "done" cannot be told from honest deletes.
                    sizes = {e: rng.randrange(80, 480) for e in ENTITIES}
                    lying = n < connections
                    conn_id = f"{'lying' if lying else 'honest'}-{n}"
                    token = s.connection(conn_id, {"seed": rng.randrange(10**6), "sizes": sizes},
                                         ENTITIES)  # fmt: skip
                    plan.append((conn_id, token, None))
                s.worker("w", concurrency=4, pool="threads")
                client = s.client()
                removed: dict[tuple[str, str], set[str]] = {}
                for round_no, full in ((1, False), (2, True)):
                    requests = [(c, client.sync_connection(c, full=full)) for c, *_ in plan]
                    for conn_id, request_id in requests:
                        runs = s.wait_request(request_id, ENTITIES, 600)
                        if runs is None:
                            ended = False
                            outcomes.append(f"{backend} {conn_id} round {round_no}: timed out")
                        elif round_no == 1 and any(r.status != RunStatus.SUCCEEDED for r in runs):
                            ended = False  # the honest first sync must succeed
                            outcomes.append(f"{backend} {conn_id}: honest sync did not succeed")
                    if round_no == 2:
                        break
                    # Honest changes, hard deletes included; then the lies.
                    for index, (conn_id, token, _) in enumerate(plan):
                        changes = sandbox.mutate(
                            token, updates=10, deletes=2, hard_deletes=rng.randrange(1, 6),
                            inserts=3,
                        )  # fmt: skip
                        for entity in ENTITIES:
                            removed[(conn_id, entity)] = set(changes[entity]["removed"])
                        if conn_id.startswith("lying"):
                            name, scenarios = _lie(rng)
                            sandbox.set_scenarios(token, scenarios)
                            plan[index] = (conn_id, token, name)
                            lies_told[name] += 1
                for conn_id, token, lie in plan:
                    for entity in ENTITIES:
                        marked = _reconciled(s.store, conn_id, entity)
                        gone = removed[(conn_id, entity)]
                        truth = sandbox.truth(token, entity)
                        result.records_checked += len(truth)
                        falsely = marked - gone
                        if falsely:
                            false_by_lie[lie or "none (honest)"] += len(falsely)
                            outcomes.append(
                                f"{backend} {conn_id} {entity} ({lie}): {len(falsely)} of "
                                f"{len(truth)} falsely marked deleted"
                            )
                        if lie is None:
                            honest_removed += len(gone)
                            honest_applied += len(gone & marked)
                so_far = sum(false_by_lie.values())
                log(f"lying upstream on {backend}: {so_far} false deletions so far")
    result.injected = sum(lies_told.values())
    result.records_lost = sum(false_by_lie.values())
    applied = honest_applied == honest_removed
    result.survived = ended and not result.records_lost and applied
    if not applied:
        outcomes.append(f"honest hard deletes applied {honest_applied}/{honest_removed}")
    result.outcome = (
        "no record the source still has was marked deleted; every run ended; honest hard "
        "deletes applied"
        if result.survived
        else "; ".join(outcomes[:4] + outcomes[-1:] * (not applied))[:600]
    )
    result.notes.append(
        "lies told (connections): "
        + ", ".join(f"{name} {n}" for name, n in sorted(lies_told.items()))
        + "; falsely deleted by lie: "
        + (", ".join(f"{name} {n}" for name, n in sorted(false_by_lie.items())) or "none")
        + f"; honest hard deletes applied {honest_applied} of {honest_removed}"
    )
    return result
