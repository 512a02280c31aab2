"""A page's upsert (worker/store/page_write.py) leaves what applying its records one by one
would, on both stores: a key listed twice, older versions, deletions and the stamps."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.store import Connection, PageCommit, RecordRow, SqlStore, open_store
from worker.timeutil import canonical_instant

pytestmark = pytest.mark.integration

TIMES = [f"2026-01-0{d}T00:00:00Z" for d in range(1, 5)]


@pytest.fixture
def store(store_url: str) -> SqlStore:
    return open_store(store_url)


def _row(key: str, at: str, deleted: bool, version: int) -> RecordRow:
    stamp = canonical_instant(at)
    data = {"key": key, "updatedAt": at, "deletedAt": at if deleted else None, "v": version}
    return RecordRow(key, json.dumps(data), stamp, stamp if deleted else None)


def _model(pages: list[tuple[str, list[RecordRow]]]) -> dict[str, tuple[object, ...]]:
    """Each record upserted on its own, in order: the rule docs/records.md states."""
    rows: dict[str, tuple[object, ...]] = {}
    for run_id, records in pages:
        for r in records:
            held = rows.get(r.key)
            if held is None or str(held[2]) <= r.updated_at:
                by = "upstream" if r.deleted_at else None
                rows[r.key] = (r.key, json.loads(r.data_json), r.updated_at, r.deleted_at, by)
            rows[r.key] = (*rows[r.key][:5], run_id)
    return rows


pages = st.lists(
    st.lists(
        st.tuples(st.sampled_from("abcd"), st.sampled_from(TIMES), st.booleans()),
        max_size=6,
    ),
    min_size=1,
    max_size=5,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pages=pages)
def test_page_upsert_equals_records_applied_one_by_one(
    store: SqlStore, pages: list[list[tuple[str, str, bool]]]
) -> None:
    connection_id = f"c-{uuid.uuid4().hex[:12]}"
    store.add_connection(Connection(id=connection_id, name="n", entity_types=("assets",)))
    written: list[tuple[str, list[RecordRow]]] = []
    version = 0
    for number, page in enumerate(pages):
        records = []
        for key, at, deleted in page:
            version += 1
            records.append(_row(key, at, deleted, version))
        run_id = f"run-{number}"
        store.commit_page(PageCommit(connection_id, "assets", run_id, tuple(records), (), None))
        written.append((run_id, records))
    stored = store._read(
        "SELECT key, CAST(data AS TEXT), source_updated_at, deleted_at, deleted_by, seen_by_run "
        "FROM records WHERE connection_id = ? AND entity_type = ?",
        (connection_id, "assets"),
    )
    got = {row[0]: (row[0], json.loads(row[1]), *row[2:]) for row in stored}
    assert got == _model(written)
    store.remove_connection(connection_id)
