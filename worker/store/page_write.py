"""One page's commit: its records, quarantine, counters, cursor and run progress.

The page is written in few statements (the worker's CPU per record is mostly
spent per statement and per row, BENCHMARKS.md "Where the worker's time
goes"): one read of the stored versions of the page's keys, one upsert that
also stamps ``seen_by_run`` and ``deleted_by`` (docs/records.md,
``store/run_end.py``), and one update of each counter row. What the page
changed (created, updated, deleted, the pair's live and deleted counts) is
worked out from the stored versions read first, under the pair's lock, by the
upsert's own rule: a record is applied when the stored one is not newer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from worker.store.base import Tx
from worker.store.models import PageCommit, RecordRow

RECONCILIATION = "reconciliation"
UPSTREAM = "upstream"

# Every listed key is stamped as read by this run, applied or not; the rest of
# the row changes only when the stored version is not newer than the record.
_NEWER = "records.source_updated_at <= excluded.source_updated_at"
_ON_CONFLICT = f"""
ON CONFLICT (connection_id, entity_type, key) DO UPDATE SET
    seen_by_run = excluded.seen_by_run,
    data = CASE WHEN {_NEWER} THEN excluded.data ELSE records.data END,
    raw = CASE WHEN {_NEWER} THEN excluded.raw ELSE records.raw END,
    deleted_at = CASE WHEN {_NEWER} THEN excluded.deleted_at ELSE records.deleted_at END,
    deleted_by = CASE WHEN {_NEWER} THEN excluded.deleted_by ELSE records.deleted_by END,
    synced_at = CASE WHEN {_NEWER} THEN excluded.synced_at ELSE records.synced_at END,
    source_updated_at = CASE WHEN {_NEWER} THEN excluded.source_updated_at
        ELSE records.source_updated_at END
"""
_COLUMNS = (
    "connection_id, entity_type, key, data, source_updated_at, deleted_at, synced_at, raw, "
    "seen_by_run, deleted_by"
)
# SQLite: one executemany, row by row in page order (a key listed twice is
# applied twice, as the source sent it).
_UPSERT_ROWS = f"""
INSERT INTO records ({_COLUMNS})
VALUES (?, ?, ?, {{json_param}}, ?, ?, ?, ?, ?, ?)
{_ON_CONFLICT}"""
# PostgreSQL: one statement for the whole page; it cannot touch a key twice,
# so the page is folded to one record per key first (``_last_of_each_key``). The
# arrays go in binary (``%b``): psycopg escapes text arrays with a regex per element.
_UPSERT_ARRAYS = f"""
INSERT INTO records ({_COLUMNS})
SELECT ?, ?, t.key, CAST(t.data AS JSONB), t.updated_at, t.deleted_at, ?, t.raw, ?, t.deleted_by
FROM unnest(CAST(%b AS TEXT[]), CAST(%b AS TEXT[]), CAST(%b AS TEXT[]), CAST(%b AS TEXT[]),
            CAST(%b AS TEXT[]), CAST(%b AS TEXT[]))
    AS t(key, data, updated_at, deleted_at, raw, deleted_by)
{_ON_CONFLICT}"""

# One primary-key lookup per key, whatever the planner believes of the table: with
# ``key IN (...)`` a table it thinks empty (no ANALYZE yet, as in a first sync) is
# read by its first two key columns, every record of the pair for every page.
_STORED_VERSIONS_PG = """
SELECT r.key, r.source_updated_at, r.deleted_at, r.deleted_by
FROM unnest(CAST(%b AS TEXT[])) AS page(key)
CROSS JOIN LATERAL (
    SELECT key, source_updated_at, deleted_at, deleted_by FROM records
    WHERE connection_id = ? AND entity_type = ? AND key = page.key
) AS r
"""

_UPSERT_QUARANTINE = """
INSERT INTO quarantine (connection_id, entity_type, fingerprint, record_key, reason, raw, run_id,
                        first_seen_at, last_seen_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (connection_id, entity_type, fingerprint) DO UPDATE SET
    reason = excluded.reason,
    run_id = excluded.run_id,
    last_seen_at = excluded.last_seen_at,
    times_seen = quarantine.times_seen + 1
"""

# Taking the pair's counter row first serialises the pair's commits
# (PostgreSQL row lock; SQLite has one writer anyway), so the stored versions
# read next are the ones the upsert meets.
_COUNT_PAGE = """
INSERT INTO pair_counts (connection_id, entity_type, pages, written) VALUES (?, ?, 1, ?)
ON CONFLICT (connection_id, entity_type) DO UPDATE SET
    pages = pair_counts.pages + 1, written = pair_counts.written + excluded.written
"""

_SET_CURSOR = """
INSERT INTO cursors (connection_id, entity_type, since, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (connection_id, entity_type) DO UPDATE SET
    since = excluded.since, updated_at = excluded.updated_at
"""


# Not frozen: one is built per record, and a frozen dataclass's __init__ sets
# each field through object.__setattr__ (BENCHMARKS.md "Where the worker's time goes").
@dataclass(slots=True)
class _Stored:
    """A key's version as stored (or as the page leaves it); treat as read-only."""

    updated_at: str
    deleted_at: str | None
    deleted_by: str | None


@dataclass
class PageChanges:
    """What a page changed, by the upsert's rule applied to the stored versions."""

    created: int = 0
    updated: int = 0
    deleted: int = 0  # by deletedAt
    revived: int = 0  # deleted by a reconciliation, listed again
    live: int = 0  # change in the pair's live records
    dead: int = 0  # change in the pair's deleted records


def deleted_by(record: RecordRow) -> str | None:
    """Who deleted an applied record: the upstream (its deletedAt), or nobody."""
    return UPSTREAM if record.deleted_at else None


def page_changes(records: Sequence[RecordRow], stored: dict[str, _Stored]) -> PageChanges:
    """Walk the page in order as the upsert does; count what it changes.

    An applied record's ``deleted_by`` follows its ``deletedAt`` (a key marked
    by a reconciliation that is listed again is live again).
    """
    changes = PageChanges()
    current = dict(stored)
    for record in records:
        before = current.get(record.key)
        if before is not None and before.updated_at > record.updated_at:
            continue  # the stored version is newer: only seen_by_run is stamped
        by = deleted_by(record)
        if before is None:
            changes.created += 1
        elif record.deleted_at and before.deleted_at is None:
            changes.deleted += 1
        elif before.updated_at < record.updated_at or before.deleted_by != by:
            changes.updated += 1
        if before is not None and before.deleted_by == RECONCILIATION:
            changes.revived += 1
        current[record.key] = _Stored(record.updated_at, record.deleted_at, by)
    for key, now in current.items():
        was = stored.get(key)
        if was is not None:
            changes.live -= was.deleted_at is None
            changes.dead -= was.deleted_at is not None
        changes.live += now.deleted_at is None
        changes.dead += now.deleted_at is not None
    return changes


def write_page(tx: Tx, commit: PageCommit, now: str) -> None:
    """Store a page's records, quarantine, cursor and run progress (inside ``tx``)."""
    conn_id, entity = commit.connection_id, commit.entity_type
    tx.execute(_COUNT_PAGE, (conn_id, entity, len(commit.records)))
    stored = _stored_versions(tx, conn_id, entity, {r.key for r in commit.records})
    changes = page_changes(commit.records, stored)
    _upsert_records(tx, commit, now)
    quarantined = _write_quarantine(tx, commit, now) if commit.quarantined else 0
    tx.execute(
        "UPDATE pair_counts SET live = live + ?, deleted = deleted + ?, "
        "quarantined = quarantined + ?, reconciled = reconciled - ? "
        "WHERE connection_id = ? AND entity_type = ?",
        (changes.live, changes.dead, quarantined, changes.revived, conn_id, entity),
    )
    tx.execute(_SET_CURSOR, (conn_id, entity, commit.cursor, now))
    # A committed page is progress: the count of recoveries in a row restarts.
    tx.execute(
        "UPDATE runs SET pages = pages + 1, records = records + ?, quarantined = quarantined + ?, "
        "heartbeat_at = ?, recoveries = 0, created = created + ?, updated = updated + ?, "
        "deleted = deleted + ?, keyless = keyless + ?, short_pages = short_pages + ?, "
        "listed_total = COALESCE(listed_total, ?) WHERE id = ?",
        (
            len(commit.records),
            len(commit.quarantined),
            now,
            changes.created,
            changes.updated,
            changes.deleted,
            sum(1 for q in commit.quarantined if q.key is None),
            int(commit.short),
            commit.listed_total,
            commit.run_id,
        ),
    )


def _stored_versions(
    tx: Tx, connection_id: str, entity_type: str, keys: set[str]
) -> dict[str, _Stored]:
    """The stored version of each of ``keys``, read before the page is written."""
    if not keys:
        return {}
    if tx.dialect_name == "postgresql":
        rows = tx.execute(
            _STORED_VERSIONS_PG, (sorted(keys), connection_id, entity_type)
        ).fetchall()
        return {row[0]: _Stored(row[1], row[2], row[3]) for row in rows}
    marks = ",".join("?" * len(keys))
    rows = tx.execute(
        "SELECT key, source_updated_at, deleted_at, deleted_by FROM records "
        f"WHERE connection_id = ? AND entity_type = ? AND key IN ({marks})",
        (connection_id, entity_type, *sorted(keys)),
    ).fetchall()
    return {row[0]: _Stored(row[1], row[2], row[3]) for row in rows}


def _upsert_records(tx: Tx, commit: PageCommit, now: str) -> None:
    conn_id, entity, run_id = commit.connection_id, commit.entity_type, commit.run_id
    if not commit.records:
        return
    if tx.dialect_name != "postgresql":
        tx.executemany(
            _UPSERT_ROWS,
            [
                (conn_id, entity, r.key, r.data_json, r.updated_at, r.deleted_at, now, r.raw)
                + (run_id, deleted_by(r))
                for r in commit.records
            ],
        )
        return
    records = _last_of_each_key(commit.records)
    tx.execute(
        _UPSERT_ARRAYS,
        (
            conn_id,
            entity,
            now,
            run_id,
            [r.key for r in records],
            [r.data_json for r in records],
            [r.updated_at for r in records],
            [r.deleted_at for r in records],
            [r.raw for r in records],
            [deleted_by(r) for r in records],
        ),
    )


def _last_of_each_key(records: Sequence[RecordRow]) -> list[RecordRow]:
    """Per key, the record that upserting them one by one would leave stored.

    Applying in order keeps the running newest, and a later record with the
    same ``updatedAt`` replaces an earlier one: what stays is the last record
    with the key's greatest ``updatedAt`` (if the stored one is not newer).
    """
    chosen: dict[str, RecordRow] = {}
    for record in records:
        held = chosen.get(record.key)
        if held is None or held.updated_at <= record.updated_at:
            chosen[record.key] = record
    return list(chosen.values())


def _write_quarantine(tx: Tx, commit: PageCommit, now: str) -> int:
    """Upsert the page's quarantined records; returns how many fingerprints are new."""
    conn_id, entity = commit.connection_id, commit.entity_type
    rows = [
        (
            conn_id,
            entity,
            hashlib.sha256(q.raw_json.encode()).hexdigest(),
            q.key,
            q.reason,
            q.raw_json,
            commit.run_id,
            now,
            now,
        )
        for q in commit.quarantined
    ]
    fingerprints = sorted({row[2] for row in rows})
    marks = ",".join("?" * len(fingerprints))
    (known,) = tx.execute(
        "SELECT COUNT(*) FROM quarantine WHERE connection_id = ? AND entity_type = ? "
        f"AND fingerprint IN ({marks})",
        (conn_id, entity, *fingerprints),
    ).fetchone()
    tx.executemany(_UPSERT_QUARANTINE, rows)
    # The source still lists these keys: a reconciliation must not mark them.
    tx.executemany(
        "UPDATE records SET seen_by_run = ? WHERE connection_id = ? AND entity_type = ? "
        "AND key = ?",
        [(commit.run_id, conn_id, entity, q.key) for q in commit.quarantined if q.key is not None],
    )
    return len(fingerprints) - int(known)
