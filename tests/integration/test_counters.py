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
    SqlStore,
    open_store,
)
from worker.store.schema import BOOTSTRAP, MIGRATIONS
from worker.timeutil import canonical_instant

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
    written = {(t.connection_id, t.entity_type): (t.pages, t.records) for t in store.totals().runs}
    assert written[("c1", "assets")] == (3, 6)
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
    assert sum(t.pages for t in (*totals.runs, *totals.active_runs)) == 8
    assert [(f.kind, f.runs) for f in totals.failures] == [("auth", 1)]


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
