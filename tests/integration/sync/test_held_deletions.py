"""The mass-deletion guard on both stores: hold, confirm, come back, approve, discard.

A complete full read that would mark more than the guard allows holds the
set (worker/store/held_deletions.py). These tests drive the store the way a
run does (pages, then ``finish_run`` with the full read's verdict), and the
operator's CLI as it is run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from worker.store import Connection, PageCommit, RecordRow, Run, RunStatus, SqlStore, open_store
from worker.store.models import DeletionGuard, FullReadVerdict
from worker.timeutil import utc_now

pytestmark = pytest.mark.integration

STAMP = "2026-01-01T00:00:01.000000Z"
KEYS = [f"A-{i:03d}" for i in range(100)]
WAIT_AN_HOUR = FullReadVerdict(incomplete=None, guard=DeletionGuard(confirm_after_s=3600))
AT_ONCE = FullReadVerdict(incomplete=None, guard=DeletionGuard(confirm_after_s=0))


@pytest.fixture
def store(store_url: str) -> SqlStore:
    s = open_store(store_url)
    s.add_connection(Connection(id="c", name="c", entity_types=("assets",)))
    s.set_webhook_events("c", ["sync.completed"])
    _run(s, KEYS, full=False)
    return s


def _run(
    store: SqlStore, keys: list[str], *, full: bool, verdict: FullReadVerdict | None = None
) -> str:
    """One run reading ``keys`` (unchanged records), ended as succeeded."""
    run_id = str(uuid.uuid4())
    now = utc_now()
    store.start_run(
        Run(id=run_id, connection_id="c", entity_type="assets", status=RunStatus.RUNNING,
            started_at=now, heartbeat_at=now, full=full)
    )  # fmt: skip
    time.sleep(0.002)  # the keys read were synced before the run began
    rows = tuple(
        RecordRow(k, json.dumps({"key": k, "updatedAt": STAMP}), STAMP, None) for k in keys
    )
    store.commit_page(
        PageCommit(connection_id="c", entity_type="assets", run_id=run_id, records=rows,
                   quarantined=(), cursor=STAMP)
    )  # fmt: skip
    store.finish_run(run_id, RunStatus.SUCCEEDED, verdict=verdict)
    return run_id


def _deleted(store: SqlStore) -> set[str]:
    return {k for k, (_, by) in store.deletions("c", "assets").items() if by == "reconciliation"}


def _held(store: SqlStore) -> set[str]:
    return {k for h in store.held_deletions("c") for k in h.keys}


def _status(store: SqlStore) -> tuple[int, int, str | None]:
    [status] = store.entity_statuses("c")
    return status.records - status.deleted, status.held_deletions, status.reconcile_note


def test_a_read_that_proves_nothing_marks_nothing_and_says_why(store: SqlStore) -> None:
    why = FullReadVerdict(incomplete="the upstream's own sync is not done")
    run = _run(store, KEYS[:10], full=True, verdict=why)
    assert _deleted(store) == set() and _held(store) == set()
    assert store.run_reconciliation(run) == (0, 0, f"not reconciled: {why.incomplete}")
    assert _status(store) == (100, 0, f"not reconciled: {why.incomplete}")
    [event] = [e for e in store.events(connection_id="c") if e.type == "sync.completed"][-1:]
    body = json.loads(event.body_json)
    assert body["reconciled"] is False and "sync is not done" in body["reconcile_reason"]
    # A full run ended with no verdict at all is no proof either.
    _run(store, KEYS[:10], full=True, verdict=None)
    assert _deleted(store) == set()


def test_a_mass_deletion_is_held_then_confirmed_by_a_later_complete_read(
    store: SqlStore,
) -> None:
    # A lagging replica: 40 of 100 keys, consistent with itself.
    first = _run(store, KEYS[:40], full=True, verdict=WAIT_AN_HOUR)
    assert _deleted(store) == set()
    assert _held(store) == set(KEYS[40:])
    marked, held_now, note = store.run_reconciliation(first)
    assert (marked, held_now) == (0, 60) and note is not None
    assert "60 of 100 live records" in note and "deletions approve c --entity assets" in note
    assert _status(store)[:2] == (100, 60)
    held_events = [e for e in store.events(connection_id="c") if e.type == "deletions.held"]
    assert len(held_events) == 1  # sent though the connection opted into sync.* only
    assert json.loads(held_events[0].body_json)["deletions"] == {"held": 60, "run_id": first}
    completed = json.loads(
        [e for e in store.events(connection_id="c") if e.type == "sync.completed"][-1].body_json
    )
    assert completed["reconciled"] is False and completed["deletions_held"] == 60

    # Within the hour: ten keys are listed again and leave the set; nothing is applied.
    _run(store, KEYS[:50], full=True, verdict=WAIT_AN_HOUR)
    assert _deleted(store) == set() and _held(store) == set(KEYS[50:])
    assert len([e for e in store.events(connection_id="c") if e.type == "deletions.held"]) == 1

    # A complete read after the delay still misses them: applied now.
    last = _run(store, KEYS[:50], full=True, verdict=AT_ONCE)
    assert _deleted(store) == set(KEYS[50:]) and _held(store) == set()
    assert store.run_reconciliation(last)[:2] == (50, 0)
    assert _status(store) == (50, 0, None)


def test_a_few_honest_deletions_are_applied_at_once(store: SqlStore) -> None:
    _run(store, KEYS[7:], full=True, verdict=WAIT_AN_HOUR)
    assert _deleted(store) == set(KEYS[:7]) and _held(store) == set()


def test_an_empty_read_of_a_small_pair_is_held_whatever_the_share(store_url: str) -> None:
    store = open_store(store_url)
    store.add_connection(Connection(id="c", name="c", entity_types=("assets",)))
    _run(store, KEYS[:15], full=False)
    _run(store, [], full=True, verdict=WAIT_AN_HOUR)
    assert _deleted(store) == set() and _held(store) == set(KEYS[:15])


def test_an_operator_approves_or_discards_a_held_set(store: SqlStore) -> None:
    _run(store, KEYS[:40], full=True, verdict=WAIT_AN_HOUR)
    # Five held keys are read again by an incremental run: they came back.
    _run(store, KEYS[40:45], full=False)
    assert store.approve_held_deletions("c", "assets") == (55, 5)
    assert _deleted(store) == set(KEYS[45:]) and _held(store) == set()
    assert _status(store)[:2] == (45, 0)

    _run(store, KEYS[:10], full=True, verdict=WAIT_AN_HOUR)
    assert len(_held(store)) == 35
    assert store.discard_held_deletions("c", "assets") == 35
    assert _held(store) == set() and len(_deleted(store)) == 55
    assert _status(store)[:2] == (45, 0)


def test_a_connection_may_loosen_its_own_guard(store: SqlStore) -> None:
    store.set_deletion_guard("c", max_percent=100.0, min_records=1000)
    assert store.deletion_guard("c") == (100.0, 1000)
    _run(store, KEYS[:40], full=True, verdict=WAIT_AN_HOUR)
    assert _deleted(store) == set(KEYS[40:])
    # Never the whole pair on one read's word, whatever the connection's guard.
    _run(store, [], full=True, verdict=WAIT_AN_HOUR)
    assert _held(store) == set(KEYS[:40])


def _cli(store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENTITY_SYNC_STORE_URL": store_url}
    return subprocess.run(
        [sys.executable, "-m", "worker.ops.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_the_cli_lists_and_approves_held_deletions(store: SqlStore, store_url: str) -> None:
    _run(store, KEYS[:40], full=True, verdict=WAIT_AN_HOUR)
    listed = _cli(store_url, "deletions", "list", "c")
    assert listed.returncode == 0, listed.stderr
    assert "c assets: 60 held since" in listed.stdout and "A-040" in listed.stdout
    shown = json.loads(_cli(store_url, "deletions", "--json").stdout)
    assert [(h["connection_id"], len(h["keys"])) for h in shown] == [("c", 60)]
    status = _cli(store_url, "status", "c")
    assert "HELD" in status.stdout and "60 deletions held" in status.stdout
    wrong = _cli(store_url, "deletions", "approve", "c")
    assert wrong.returncode == 2 and "--entity" in wrong.stderr
    unknown = _cli(store_url, "deletions", "approve", "nope", "--entity", "assets")
    assert unknown.returncode == 2 and "unknown connection" in unknown.stderr
    approved = _cli(store_url, "deletions", "approve", "c", "--entity", "assets")
    assert approved.returncode == 0 and "60 held deletions of c assets applied" in approved.stdout
    assert _deleted(store) == set(KEYS[40:])
    again = _cli(store_url, "deletions", "discard", "c", "--entity", "assets")
    assert again.returncode == 1 and "0 held deletions" in again.stdout

    guard = _cli(store_url, "connections", "deletion-guard", "c", "--percent", "25")
    assert guard.returncode == 0 and "past 25% of the live records and 20 records" in guard.stdout
    assert store.deletion_guard("c") == (25.0, None)
    bad = _cli(store_url, "connections", "deletion-guard", "c", "--percent", "120")
    assert bad.returncode == 2 and "between 0 and 100" in bad.stderr
