"""Per-pair counters (schema version 5) equal the real counts on both stores."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.store import (
    Connection,
    PageCommit,
    QuarantinedRecord,
    RecordRow,
    Run,
    RunStatus,
    SqlStore,
    open_store,
)
from worker.store.schema import BOOTSTRAP, MIGRATIONS
from worker.timeutil import canonical_instant

pytestmark = pytest.mark.integration

TIMES = [f"2026-01-0{d}T00:00:00Z" for d in range(1, 6)]


def _row(key: str, at: str, deleted: bool) -> RecordRow:
    stamp = canonical_instant(at)
    data = {"key": key, "updatedAt": at, "deletedAt": at if deleted else None}
    return RecordRow(key, json.dumps(data), stamp, stamp if deleted else None)


def _real(store: SqlStore, connection_id: str, entity: str) -> tuple[int, int, int]:
    live, deleted = store._read(
        "SELECT COALESCE(SUM(CASE WHEN deleted_at IS NULL THEN 1 ELSE 0 END), 0), "
        "COALESCE(SUM(CASE WHEN deleted_at IS NULL THEN 0 ELSE 1 END), 0) FROM records "
        "WHERE connection_id = ? AND entity_type = ?",
        (connection_id, entity),
    )[0]
    (quarantined,) = store._read(
        "SELECT COUNT(*) FROM quarantine WHERE connection_id = ? AND entity_type = ?",
        (connection_id, entity),
    )[0]
    return int(live), int(deleted), int(quarantined)


def _counted(store: SqlStore, connection_id: str, entity: str) -> tuple[int, int, int]:
    (status,) = [s for s in store.entity_statuses(connection_id) if s.entity_type == entity]
    return status.records - status.deleted, status.deleted, status.quarantined


@pytest.fixture
def store(store_url: str) -> SqlStore:
    return open_store(store_url)


pages = st.lists(
    st.tuples(
        st.lists(
            st.tuples(st.sampled_from("abcdef"), st.sampled_from(TIMES), st.booleans()),
            max_size=6,
        ),
        st.lists(st.sampled_from(["bad-1", "bad-2", "bad-3"]), max_size=2),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(pages=pages)
def test_counters_equal_real_counts_after_mixed_commits(
    store: SqlStore, pages: list[tuple[list[tuple[str, str, bool]], list[str]]]
) -> None:
    # Inserts, updates that flip deletedAt either way, older versions the upsert
    # ignores, a key twice in one page, quarantine seen again: every page must
    # leave the counters equal to a COUNT over the rows.
    connection_id = f"c-{uuid.uuid4().hex[:12]}"
    store.add_connection(Connection(id=connection_id, name="n", entity_types=("assets",)))
    for rows, bad in pages:
        store.commit_page(
            PageCommit(
                connection_id,
                "assets",
                "run-x",
                tuple(_row(*r) for r in rows),
                tuple(QuarantinedRecord("bad_data", json.dumps({"raw": b})) for b in bad),
                None,
            )
        )
        assert _counted(store, connection_id, "assets") == _real(store, connection_id, "assets")
    store.remove_connection(connection_id)
    assert store._read(
        "SELECT COUNT(*) FROM pair_counts WHERE connection_id = ?", (connection_id,)
    ) == [(0,)]


def test_pages_and_records_written_are_counted_with_the_page(store: SqlStore) -> None:
    store.add_connection(Connection(id="c1", name="n", entity_types=("assets", "sites")))
    for day in TIMES[:3]:
        store.commit_page(
            PageCommit(
                "c1", "assets", "r", (_row("a", day, False), _row("b", day, False)), (), None
            )
        )
    written = {t.connection_id: (t.pages, t.records) for t in store.totals().work}
    assert written["c1"] == (3, 6)
    statuses = {s.entity_type: s for s in store.entity_statuses("c1")}
    assert (statuses["assets"].records, statuses["sites"].records) == (2, 0)


def test_migration_backfills_the_counters_from_existing_rows(store_url: str) -> None:
    old = SqlStore(store_url)
    with old._write() as tx:  # the store as version 3 left it, with data in it
        tx.execute(BOOTSTRAP)
        for version in (1, 2, 3):
            for statement in MIGRATIONS[version]:
                tx.execute(statement)
        tx.execute("INSERT INTO schema_version (version) VALUES (3)")
        tx.execute(
            "INSERT INTO connections (id, name, entity_types, created_at, updated_at) "
            "VALUES ('c1', 'n', 'assets', ?, ?)",
            (TIMES[0], TIMES[0]),
        )
        for i in range(7):
            tx.execute(
                "INSERT INTO records (connection_id, entity_type, key, data, source_updated_at, "
                "deleted_at, synced_at) VALUES ('c1', 'assets', ?, {json_param}, ?, ?, ?)",
                (f"k{i}", "{}", TIMES[0], TIMES[1] if i < 2 else None, TIMES[0]),
            )
        tx.execute(
            "INSERT INTO quarantine (connection_id, entity_type, fingerprint, reason, raw, "
            "run_id, first_seen_at, last_seen_at) VALUES ('c1', 'assets', 'f', 'r', '{}', 'x', "
            "?, ?)",
            (TIMES[0], TIMES[0]),
        )
        for i, status in enumerate(("succeeded", "succeeded", "failed", "running")):
            tx.execute(
                "INSERT INTO runs (id, connection_id, entity_type, trigger, is_full, status, "
                "started_at, pages, records, error_kind) VALUES (?, 'c1', 'assets', 'manual', "
                "?, ?, ?, 2, 150, ?)",
                (f"r{i}", False, status, TIMES[i], "auth" if status == "failed" else None),
            )
    store = open_store(store_url)
    assert _counted(store, "c1", "assets") == (5, 2, 1) == _real(store, "c1", "assets")
    totals = store.totals()
    runs = {(t.status): t.runs for t in totals.runs if t.connection_id == "c1"}
    assert runs["succeeded"] == 2 and runs["failed"] == 1
    assert [(t.status, t.runs) for t in totals.active_runs] == [("running", 1)]
    assert [(t.connection_id, t.pages, t.records) for t in totals.work] == [("c1", 8, 600)]
    assert [(f.kind, f.runs) for f in totals.failures] == [("auth", 1)]
    # Version 7 points each pair at its latest run from the history already there.
    (status,) = store.entity_statuses("c1")
    assert status.last_run is not None and status.last_run.id == "r3"


def test_status_and_totals_never_read_records(store: SqlStore) -> None:
    store.add_connection(Connection(id="c1", name="n", entity_types=("assets",)))
    store.commit_page(PageCommit("c1", "assets", "r", (_row("a", TIMES[0], False),), (), None))
    # Make any scan of records fail: the monitoring reads must not need it.
    with store._write() as tx:
        tx.execute("ALTER TABLE records RENAME TO records_hidden")
    try:
        store.totals()
        assert _counted(store, "c1", "assets") == (1, 0, 0)
    finally:
        with store._write() as tx:
            tx.execute("ALTER TABLE records_hidden RENAME TO records")


def _latest_by_search(store: SqlStore) -> tuple[str | None, str | None]:
    """The pair's last run (not skipped) and last success, searched in the run history."""
    last = store._read(
        "SELECT id FROM runs WHERE connection_id = 'c1' AND entity_type = 'assets' "
        "AND status <> 'skipped' ORDER BY started_at DESC LIMIT 1"
    )
    success = store._read(
        "SELECT finished_at FROM runs WHERE connection_id = 'c1' AND entity_type = 'assets' "
        "AND status = 'succeeded' ORDER BY started_at DESC LIMIT 1"
    )
    return (last[0][0] if last else None), (success[0][0] if success else None)


def test_last_run_and_last_success_are_kept_with_every_run_change(store: SqlStore) -> None:
    store.add_connection(Connection(id="c1", name="n", entity_types=("assets",)))

    def kept() -> tuple[str | None, str | None]:
        (status,) = store.entity_statuses("c1")
        (row,) = store.pair_rows(store.list_connections())
        assert (row[5], row[9]) == (
            status.last_success_at,
            status.last_run.status if status.last_run else None,
        )
        return (status.last_run.id if status.last_run else None), status.last_success_at

    assert kept() == (None, None)
    store.record_run(Run("r1", "c1", "assets", RunStatus.SUCCEEDED, TIMES[0], finished_at=TIMES[1]))
    store.start_run(Run("r2", "c1", "assets", RunStatus.RUNNING, TIMES[2]))
    assert kept() == ("r2", TIMES[1]) == _latest_by_search(store)
    store.finish_run("r2", RunStatus.FAILED, error_kind="bug", error_message="x")
    store.queue_runs([Run("r3", "c1", "assets", RunStatus.QUEUED, TIMES[3])])
    assert kept() == ("r3", TIMES[1]) == _latest_by_search(store)
    assert store.skip_queued_run("r3", coalesced_into="r2", message="busy")
    assert kept() == ("r2", TIMES[1]) == _latest_by_search(store)
    store.start_run(Run("r4", "c1", "assets", RunStatus.RUNNING, TIMES[4]))
    store.finish_run("r4", RunStatus.SUCCEEDED)
    assert kept() == _latest_by_search(store)
    assert kept()[0] == "r4" and (kept()[1] or "") > TIMES[4]
    # A run of another pair moves nothing here.
    store.record_run(Run("other", "c2", "assets", RunStatus.SUCCEEDED, "2027-01-01T00:00:00Z"))
    assert kept() == _latest_by_search(store)
