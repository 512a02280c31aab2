"""The store's contract, run against real SQLite and real PostgreSQL alike."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from worker.errors import ConnectionExists, StoreError, UnknownConnection
from worker.store import (
    Connection,
    PageCommit,
    ParkedJob,
    QuarantinedRecord,
    RecordRow,
    Run,
    RunStatus,
    SqlStore,
    TransitionRecord,
    open_store,
)
from worker.store.schema import BOOTSTRAP, MIGRATIONS, SCHEMA_VERSION
from worker.timeutil import canonical_instant, utc_now

pytestmark = pytest.mark.integration


def _row(key: str, at: str, **fields: object) -> RecordRow:
    data = {"key": key, "updatedAt": at, **fields}
    return RecordRow(
        key=key, data_json=json.dumps(data), updated_at=canonical_instant(at), deleted_at=None
    )


def _commit(
    store: SqlStore,
    *rows: RecordRow,
    cursor: str | None = None,
    quarantined: tuple[QuarantinedRecord, ...] = (),
) -> None:
    store.commit_page(PageCommit("c1", "assets", "run-1", tuple(rows), quarantined, cursor))


@pytest.fixture
def store(store_url: str) -> SqlStore:
    store = open_store(store_url)
    store.add_connection(Connection(id="c1", name="Acme", entity_types=("assets", "sites")))
    store.start_run(
        Run(
            id="run-1",
            connection_id="c1",
            entity_type="assets",
            status=RunStatus.RUNNING,
            started_at=utc_now(),
        )
    )
    return store


def test_migrate_is_idempotent(store_url: str) -> None:
    open_store(store_url)
    open_store(store_url)


def test_registry_round_trip(store: SqlStore) -> None:
    with pytest.raises(ConnectionExists):
        store.add_connection(Connection(id="c1", name="again", entity_types=("assets",)))
    assert store.get_connection("c1").entity_types == ("assets", "sites")
    assert store.set_token("c1", "ciphertext") == 1
    assert store.get_connection("c1").token_ciphertext == "ciphertext"
    updated = store.update_connection("c1", webhook_url="https://hooks.example/x")
    assert updated.webhook_url == "https://hooks.example/x"
    with pytest.raises(UnknownConnection):
        store.get_connection("nope")
    store.remove_connection("c1")
    assert store.list_connections() == []


def test_older_version_never_overwrites_newer(store: SqlStore) -> None:
    _commit(store, _row("A-1", "2026-11-20T08:00:00Z", name="new"))
    _commit(store, _row("A-1", "2026-11-19T08:00:00Z", name="old"))
    [record] = store.records("c1", "assets")
    assert record.data["name"] == "new"
    _commit(store, _row("A-1", "2026-11-20T08:00:00.5Z", name="newer"))
    assert store.records("c1", "assets")[0].data["name"] == "newer"


def test_unknown_fields_and_nesting_are_kept(store: SqlStore) -> None:
    _commit(store, _row("A-1", "2026-11-20T08:00:00Z", custom={"deep": [1, {"x": None}]}, ü="ß"))
    assert store.records("c1", "assets")[0].data["custom"] == {"deep": [1, {"x": None}]}
    assert store.records("c1", "assets")[0].data["ü"] == "ß"


def test_deleted_at_marks_deleted(store: SqlStore) -> None:
    _commit(store, _row("A-1", "2026-11-20T08:00:00Z"))
    deleted = RecordRow(
        "A-1",
        "{}",
        canonical_instant("2026-11-21T00:00:00Z"),
        canonical_instant("2026-11-21T00:00:00Z"),
    )
    _commit(store, deleted)
    [record] = store.records("c1", "assets")
    assert record.deleted_at == "2026-11-21T00:00:00.000000Z"
    [status] = [s for s in store.entity_statuses("c1") if s.entity_type == "assets"]
    assert (status.records, status.deleted) == (1, 1)


def test_page_records_cursor_and_progress_commit_together(store: SqlStore) -> None:
    _commit(
        store,
        _row("A-1", "2026-11-20T08:00:00Z"),
        _row("A-2", "2026-11-20T09:00:00Z"),
        cursor="2026-11-20T09:00:00.000000Z",
        quarantined=(QuarantinedRecord(reason="record has no string key", raw_json="{}"),),
    )
    assert store.get_cursor("c1", "assets") == "2026-11-20T09:00:00.000000Z"
    run = store.get_run("run-1")
    assert run is not None and (run.pages, run.records, run.quarantined) == (1, 2, 1)
    assert store.quarantined("c1", "assets") == [(None, "record has no string key")]


def test_a_failed_commit_changes_nothing(store: SqlStore) -> None:
    good = _row("A-1", "2026-11-20T08:00:00Z")
    with pytest.raises(StoreError):
        # A value no driver can bind fails halfway through the transaction.
        _commit(store, good, RecordRow("A-2", object(), "x", None), cursor="later")  # type: ignore[arg-type]
    assert store.records("c1", "assets") == []
    assert store.get_cursor("c1", "assets") is None


def test_full_run_forgets_the_cursor(store: SqlStore) -> None:
    _commit(store, _row("A-1", "2026-11-20T08:00:00Z"), cursor="2026-11-20T08:00:00.000000Z")
    store.start_run(
        Run(
            id="run-2",
            connection_id="c1",
            entity_type="assets",
            status=RunStatus.RUNNING,
            started_at=utc_now(),
            full=True,
        )
    )
    assert store.get_cursor("c1", "assets") is None
    assert len(store.records("c1", "assets")) == 1


def test_run_history_and_status(store: SqlStore) -> None:
    store.finish_run("run-1", RunStatus.FAILED, error_kind="unavailable", error_message="503")
    store.finish_run("run-1", RunStatus.SUCCEEDED)  # a closed run stays closed
    run = store.get_run("run-1")
    assert run is not None and run.status == "failed" and run.error_kind == "unavailable"
    statuses = {s.entity_type: s for s in store.entity_statuses()}
    assert statuses["assets"].last_run is not None
    assert statuses["assets"].last_run.id == "run-1"
    assert statuses["sites"].last_run is None


def test_concurrent_writers_do_not_lose_pages(store: SqlStore) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(20):
                _commit(store, _row(f"W{n}-{i}", "2026-11-20T08:00:00Z"))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.records("c1", "assets")) == 80


def _parked(run_id: str, due: str) -> ParkedJob:
    return ParkedJob(
        connection_id="c1",
        entity_type="assets",
        run_id=run_id,
        due_at=due,
        reason="open until later",
        payload_json='{"connection_id": "c1"}',
    )


def test_parked_jobs_are_one_per_pair_and_claimed_until_unparked(store: SqlStore) -> None:
    assert store.park_job(_parked("run-1", "2026-01-01T00:00:00.000000Z")) is None
    assert store.get_run("run-1").status == "deferred"  # type: ignore[union-attr]
    store.start_run(
        Run(
            id="run-2",
            connection_id="c1",
            entity_type="assets",
            status=RunStatus.RUNNING,
            started_at=utc_now(),
        )
    )
    assert store.park_job(_parked("run-2", "2026-01-01T00:00:01.000000Z")) == "run-1"
    assert store.get_run("run-1").status == "skipped"  # type: ignore[union-attr]
    [job] = store.parked_jobs()
    assert job.run_id == "run-2" and job.times_parked == 2

    claimed = store.claim_due_jobs(
        now="2026-01-01T00:00:05.000000Z", claim_until="2026-01-01T00:01:00.000000Z", limit=10
    )
    assert [j.run_id for j in claimed] == ["run-2"]
    assert (
        store.claim_due_jobs(
            now="2026-01-01T00:00:06.000000Z", claim_until="2026-01-01T00:02:00.000000Z", limit=10
        )
        == []
    )
    store.touch_run("run-2", "c1", "assets")
    assert store.parked_jobs() == []
    assert store.get_run("run-2").status == "running"  # type: ignore[union-attr]


def test_transitions_keep_their_order(store: SqlStore) -> None:
    for n, (old, new) in enumerate(
        [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    ):
        store.record_transition(
            TransitionRecord("c1", None, old, new, f"step {n}", None, utc_now())
        )
    assert [t.to_state for t in store.transitions("c1")] == ["open", "half_open", "closed"]


def test_a_version_1_store_is_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    old = SqlStore(url)
    with old._write() as tx:  # the store exactly as version 1 left it
        tx.execute(BOOTSTRAP)
        for statement in MIGRATIONS[1]:
            tx.execute(statement)
        tx.execute("INSERT INTO schema_version (version) VALUES (1)")
    migrated = open_store(url)
    assert migrated.parked_jobs() == []
    assert migrated._read("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
