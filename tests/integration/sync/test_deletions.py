"""Deletion tracking: a complete, successful full read marks the keys it did not see.

Store-level tests pin the rules on both stores (what is marked, what never
is, the counts a run keeps); the end-to-end tests run a real worker against
the sandbox over HTTP, with records deleted for real before and during a full
read that spans several tasks, and receive the sync.* events as Standard
Webhooks.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.testing.receiver import STANDARD, WebhookReceiver
from harness.testing.sandbox import SandboxHandle, running_sandbox
from tests.support import Env, WorkerProcess, wait_for, wait_for_runs
from worker.client import EntitySyncClient
from worker.outbox.webhooks import new_secret
from worker.store import Connection, PageCommit, RecordRow, Run, RunStatus, SqlStore, open_store
from worker.store.models import FullReadVerdict, QuarantinedRecord
from worker.timeutil import utc_now

pytestmark = pytest.mark.integration


# -- the rules, on the store ---------------------------------------------------------


def _row(key: str, updated_at: str, deleted_at: str | None = None) -> RecordRow:
    data = {"key": key, "updatedAt": updated_at, "deletedAt": deleted_at}
    return RecordRow(key, json.dumps(data), updated_at, deleted_at)


def _start(store: SqlStore, *, full: bool, entity: str = "assets") -> str:
    run_id = str(uuid.uuid4())
    now = utc_now()
    store.start_run(
        Run(id=run_id, connection_id="c", entity_type=entity, status=RunStatus.RUNNING,
            started_at=now, heartbeat_at=now, full=full)
    )  # fmt: skip
    return run_id


def _commit(
    store: SqlStore, run_id: str, rows: list[RecordRow], bad: tuple[QuarantinedRecord, ...] = ()
) -> None:
    store.commit_page(
        PageCommit(connection_id="c", entity_type="assets", run_id=run_id, records=tuple(rows),
                   quarantined=bad, cursor=rows[-1].updated_at if rows else None)
    )  # fmt: skip


T1, T2, T3 = (
    "2026-01-01T00:00:01.000000Z",
    "2026-01-01T00:00:02.000000Z",
    "2026-01-01T00:00:03.000000Z",
)


COMPLETE = FullReadVerdict(incomplete=None)  # what worker/sync/full_read.py decides


@pytest.fixture
def store(store_url: str) -> SqlStore:
    s = open_store(store_url)
    s.add_connection(Connection(id="c", name="c", entity_types=("assets", "sites")))
    return s


def test_a_successful_full_read_marks_only_the_keys_it_did_not_see(store: SqlStore) -> None:
    first = _start(store, full=False)
    _commit(store, first, [_row(k, T1) for k in ("A", "B", "C", "D", "E")])
    _commit(store, first, [_row("S", T1)])  # soft-deleted later, by deletedAt
    assert store.finish_run(first, RunStatus.SUCCEEDED) is None  # not opted in: no event
    assert store.run_changes(first) == {"created": 6, "updated": 0, "deleted": 0, "reconciled": 0}
    time.sleep(0.01)

    full = _start(store, full=True)
    time.sleep(0.01)
    # Seen by the full read: A unchanged, B updated, S deleted by deletedAt;
    # C only as a quarantined record (the source still has the key).
    _commit(store, full, [_row("A", T1), _row("B", T2), _row("S", T2, deleted_at=T2)],
            (QuarantinedRecord(reason="bad", raw_json='{"key": "C"}', key="C"),))  # fmt: skip
    # Written by another run after the read began, never seen by this one.
    other = _start(store, full=False)
    _commit(store, other, [_row("N", T3)])
    # D and E: gone from the source, never listed.
    store.finish_run(full, RunStatus.SUCCEEDED, verdict=COMPLETE)

    deleted = store.deletions("c", "assets")
    assert {k: by for k, (_, by) in deleted.items()} == {
        "D": "reconciliation",
        "E": "reconciliation",
        "S": "upstream",
    }
    assert store.run_changes(full) == {"created": 0, "updated": 1, "deleted": 1, "reconciled": 2}
    live = {r.key for r in store.records("c", "assets") if r.deleted_at is None}
    assert live == {"A", "B", "C", "N"}
    [status] = [s for s in store.entity_statuses("c") if s.entity_type == "assets"]
    assert status.deleted == 3 and status.deleted_by_reconciliation == 2
    assert status.last_reconciled_at is not None

    # A key found deleted comes back when it is listed again, and counts as updated.
    again = _start(store, full=False)
    _commit(store, again, [_row("D", T3)])
    store.finish_run(again, RunStatus.SUCCEEDED)
    assert "D" not in store.deletions("c", "assets")
    assert store.run_changes(again)["updated"] == 1
    # The pair's counters (status reads them, never the records) follow.
    [status] = [s for s in store.entity_statuses("c") if s.entity_type == "assets"]
    assert (status.records, status.deleted, status.deleted_by_reconciliation) == (7, 2, 1)


def test_a_failed_partial_or_incremental_read_marks_nothing(store: SqlStore) -> None:
    seed = _start(store, full=False)
    _commit(store, seed, [_row(k, T1) for k in ("A", "B", "C")])
    store.finish_run(seed, RunStatus.SUCCEEDED)
    time.sleep(0.01)

    failed = _start(store, full=True)
    _commit(store, failed, [_row("A", T1)])
    store.finish_run(failed, RunStatus.FAILED, error_kind="unavailable", error_message="503")
    going = _start(store, full=True, entity="sites")  # another pair, still reading
    incremental = _start(store, full=False)
    _commit(store, incremental, [_row("A", T2)])
    store.finish_run(incremental, RunStatus.SUCCEEDED)
    assert store.deletions("c", "assets") == {}
    assert store.run_changes(failed)["reconciled"] == 0
    # A run ended already is not ended again, and reconciles nothing then.
    assert store.finish_run(failed, RunStatus.SUCCEEDED) is None
    assert store.deletions("c", "assets") == {}
    assert store.get_run(going) is not None


def test_sync_events_are_written_with_the_run_end_for_connections_that_opted_in(
    store: SqlStore,
) -> None:
    store.set_webhook_events("c", ["sync.completed", "sync.failed"])
    first = _start(store, full=False)
    _commit(store, first, [_row("A", T1), _row("B", T1)])
    event = store.finish_run(first, RunStatus.SUCCEEDED)
    assert event is not None and event.type == "sync.completed"
    assert [e.id for e in store.events(connection_id="c")] == [event.id]
    body = json.loads(event.body_json)
    assert body["records"] == {"received": 2, "created": 2, "updated": 0, "deleted": 0,
                               "deleted_by_reconciliation": 0, "quarantined": 0}  # fmt: skip
    assert body["entity_type"] == "assets" and body["run"]["id"] == first
    assert body["cursor"] == T1 and body["run"]["duration_s"] >= 0

    time.sleep(0.01)
    full = _start(store, full=True)
    _commit(store, full, [_row("A", T1)])
    completed = store.finish_run(full, RunStatus.SUCCEEDED, verdict=COMPLETE)
    assert completed is not None
    body = json.loads(completed.body_json)
    assert body["reconciled"] is True
    assert body["records"]["deleted"] == body["records"]["deleted_by_reconciliation"] == 1

    failing = _start(store, full=False)
    failed = store.finish_run(failing, RunStatus.FAILED, error_kind="auth", error_message="401")
    assert failed is not None and failed.type == "sync.failed"
    assert json.loads(failed.body_json)["reason"]["kind"] == "auth"

    store.set_webhook_events("c", ["sync.failed"])
    quiet = _start(store, full=False)
    assert store.finish_run(quiet, RunStatus.SUCCEEDED) is None
    assert len(store.events(connection_id="c")) == 3


# -- end to end: a real worker, the sandbox, deletions for real ------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(preset="empty") as handle:
        yield handle


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """Keeps every POST that the standardwebhooks package verifies with the secret."""
    r = WebhookReceiver(SECRET, check=[STANDARD]).start()
    yield r
    r.stop()


SECRET = new_secret()


def _env(store_url: str, sandbox: SandboxHandle) -> Env:
    return Env(
        store_url=store_url,
        upstream_url=sandbox.url,
        ENTITY_SYNC_WEBHOOK_ALLOW_HTTP="true",
        ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE="true",
        # Small pages, one per task: a full read spans many tasks.
        ENTITY_SYNC_PAGE_SIZE="25",
        ENTITY_SYNC_PAGES_PER_TASK="2",
    )


def _sync(env: Env, *, full: bool) -> Run:
    client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
    request = client.sync_connection("acme", entity_types=["assets"], full=full)
    [run] = wait_for_runs(env.store(), request, ["assets"], timeout_s=120)
    return run


def _live(env: Env) -> set[str]:
    return {r.key for r in env.store().records("acme", "assets") if r.deleted_at is None}


def test_hard_deletions_before_and_during_a_full_read_are_found_and_nothing_else(
    store_url: str,
    sandbox: SandboxHandle,
    receiver: WebhookReceiver,
    test_redis: Any,
    worker_factory: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    token = f"tok-{uuid.uuid4().hex[:10]}"
    sandbox.put_connection(token, {"seed": 21, "sizes": {"assets": 260}, "latency_ms": 40})
    env = _env(store_url, sandbox)
    env.add_connection("acme", token, ("assets",))
    hooked = env.cli("connections", "set-webhook", "acme", receiver.url, "--secret-stdin",
                     "--events", "sync.completed,sync.failed", stdin=SECRET)  # fmt: skip
    assert hooked.returncode == 0, hooked.stderr
    worker = WorkerProcess(env, tmp_path / "w.log").start()
    worker_factory.append(worker)

    first = _sync(env, full=False)
    assert first.status == RunStatus.SUCCEEDED
    assert len(_live(env)) == 260

    # Deleted for real before the read: an incremental sync cannot tell.
    before = sandbox.mutate(token, hard_deletes=7, entities=["assets"])["assets"]["removed"]
    assert len(before) == 7
    assert _sync(env, full=False).status == RunStatus.SUCCEEDED
    assert set(before) <= _live(env)

    # A full read, with more records deleted for real while it reads.
    client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
    request = client.sync_connection("acme", entity_types=["assets"], full=True)
    store = env.store()
    wait_for(
        lambda: any(r.pages >= 2 for r in store.runs_for_request(request)),
        60,
        "the full read to be under way",
        worker,
    )
    during = sandbox.mutate(token, hard_deletes=6, entities=["assets"])["assets"]["removed"]
    [full] = wait_for_runs(store, request, ["assets"], timeout_s=120)
    assert full.status == RunStatus.SUCCEEDED and full.tasks > 2  # several slices

    truth = {r["key"] for r in sandbox.truth(token, "assets")}
    deleted = store.deletions("acme", "assets")
    assert set(before) <= set(deleted)
    assert not truth & set(deleted), "a key the source still has was marked deleted"
    # Still live: every key the source has, and those deleted during the read
    # after it had read them (the next complete read finds them).
    assert truth <= _live(env) and _live(env) - truth <= set(during)
    assert set(deleted) <= set(before) | set(during)
    assert all(by == "reconciliation" for _, by in deleted.values())
    changes = store.run_changes(full.id)
    assert changes["reconciled"] == len(deleted) >= 7

    event = wait_for(
        lambda: [e for e in receiver.of_type("sync.completed") if e["run"]["id"] == full.id],
        30,
        "the full run's sync.completed",
        worker,
    )[0]
    assert event["records"]["deleted_by_reconciliation"] == len(deleted)
    assert event["records"]["created"] == 0 and event["reconciled"] is True
    assert event["connection_id"] == "acme" and event["entity_type"] == "assets"
    rows = json.loads(env.cli("status", "acme", "--json").stdout)
    assert rows[0]["deleted_by_reconciliation"] == len(deleted)

    # The next full read finds the rest of what was deleted during the first.
    again = _sync(env, full=True)
    assert again.status == RunStatus.SUCCEEDED
    assert _live(env) == truth
    assert set(store.deletions("acme", "assets")) == set(before) | set(during)
    assert receiver.bad_signatures == 0
    first_event = receiver.of_type("sync.completed")[0]
    assert first_event["run"]["id"] == first.id and first_event["records"]["created"] == 260


def test_a_full_read_that_fails_marks_nothing_and_says_sync_failed(
    store_url: str,
    sandbox: SandboxHandle,
    receiver: WebhookReceiver,
    test_redis: Any,
    worker_factory: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    token = f"tok-{uuid.uuid4().hex[:10]}"
    sandbox.put_connection(token, {"seed": 22, "sizes": {"assets": 200}, "latency_ms": 5})
    env = _env(store_url, sandbox)
    env.add_connection("acme", token, ("assets",))
    hooked = env.cli("connections", "set-webhook", "acme", receiver.url, "--secret-stdin",
                     "--events", "sync.failed", stdin=SECRET)  # fmt: skip
    assert hooked.returncode == 0, hooked.stderr
    worker_factory.append(WorkerProcess(env, tmp_path / "w.log").start())
    assert _sync(env, full=False).status == RunStatus.SUCCEEDED
    removed = sandbox.mutate(token, hard_deletes=5, entities=["assets"])["assets"]["removed"]

    # The credentials stop working after a few pages of the full read.
    sandbox.set_scenarios(token, [{"name": "auth_fail_from_page", "page": 4}])
    failed = _sync(env, full=True)
    assert failed.status == RunStatus.FAILED and failed.pages >= 1
    store = env.store()
    assert store.deletions("acme", "assets") == {}
    assert set(removed) <= _live(env)
    event = wait_for(lambda: receiver.of_type("sync.failed"), 30, "sync.failed")[0]
    assert event["run"]["id"] == failed.id and event["reason"]["kind"] == "auth"
    assert not receiver.of_type("sync.completed")  # not opted in
