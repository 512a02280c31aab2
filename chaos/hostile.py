"""Hostile data: many connections whose records hold what old ERP systems really hold.

Each connection serves a random mix of the classes of harness/sandbox/hostile.py
(NUL, NaN, 5,000-digit integers, lone surrogates, invalid UTF-8, deep nesting,
megabyte records, sentinel and offset timestamps...) among good records, next
to clean connections, on SQLite and then on PostgreSQL. The source changes
between a first and a second sync. Survived when every run succeeded, every
good record is stored as received and every odd one as docs/records.md says or
in quarantine with a reason (tests/odd_records.py), clean connections included.
"""

from __future__ import annotations

import random

from chaos.common import describe
from chaos.harness import CaseResult, default_settings, log, stack, succeeded
from harness.sandbox.hostile import CLASSES
from harness.testing.sandbox import running_sandbox
from tests.odd_records import HostileAudit, audit_hostile

ENTITIES = ("assets", "work-orders", "materials", "users")


def run(*, connections: int = 6, seed: int = 11) -> CaseResult:
    rng = random.Random(seed)
    result = CaseResult(
        fault="Hostile record contents (odd records mixed into good data)",
        scale=f"{connections} hostile + {connections // 2} clean connections x "
        f"{len(ENTITIES)} entity types, SQLite and PostgreSQL, one change between two syncs",
    )
    ok = True
    outcomes: list[str] = []
    total = HostileAudit()
    with running_sandbox(preset="empty") as sandbox:
        for postgres in (False, True):
            backend = "PostgreSQL" if postgres else "SQLite"
            with stack(sandbox=sandbox, postgres=postgres, **default_settings()) as s:
                plan: list[tuple[str, str, int, int | None, tuple[str, ...] | None]] = []
                for n in range(connections + connections // 2):
                    conn_seed = rng.randrange(10**6)
                    sizes = {e: rng.randrange(40, 290) for e in ENTITIES}
                    spec: dict[str, object] = {"seed": conn_seed, "sizes": sizes}
                    every: int | None = None
                    classes: tuple[str, ...] | None = None
                    if n < connections:
                        every = rng.randrange(2, 9)
                        picked = rng.sample(CLASSES, rng.randrange(1, len(CLASSES) + 1))
                        if every < 8 and "megabyte" in picked and len(picked) < 4:
                            picked.remove("megabyte")  # keep pages below the body cap
                        classes = tuple(picked) if picked else None
                        spec["hostile"] = {"every": every, "classes": list(classes or CLASSES)}
                    conn_id = f"{'hostile' if every else 'clean'}-{n}"
                    token = s.connection(conn_id, spec, ENTITIES)
                    plan.append((conn_id, token, conn_seed, every, classes))
                s.worker("w", concurrency=4, pool="threads")
                client = s.client()
                for round_no in (1, 2):
                    requests = [client.sync_connection(conn_id) for conn_id, *_ in plan]
                    for request_id in requests:
                        runs = s.wait_request(request_id, ENTITIES, 600)
                        if runs is None or not succeeded(runs):
                            ok = False
                            outcomes.append(
                                f"{backend} round {round_no}: "
                                + ("timed out" if runs is None else describe(runs))
                            )
                    if round_no == 1:
                        for _, token, *_ in plan:
                            sandbox.mutate(token, updates=15, deletes=3, inserts=5)
                for conn_id, token, conn_seed, every, classes in plan:
                    for entity in ENTITIES:
                        total.add(
                            audit_hostile(
                                s.store, sandbox, conn_id, token, entity,
                                seed=conn_seed, every=every, classes=classes,
                            )
                        )  # fmt: skip
                log(f"hostile data on {backend}: {total.checked} records checked so far")
    result.injected = sum(total.classes.values())
    result.records_checked = total.checked
    result.records_lost = len(total.lost)
    result.stale = len(total.wrong)
    result.survived = ok and total.clean
    result.outcome = (
        "every run succeeded; good records as received, odd ones stored or quarantined "
        "as documented"
        if result.survived
        else "; ".join(outcomes + total.lost[:3] + total.wrong[:3])[:600]
    )
    result.notes.append(
        "odd records by class: "
        + ", ".join(f"{name} {count}" for name, count in sorted(total.classes.items()))
    )
    return result
