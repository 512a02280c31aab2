"""SqlStore: the SQL truth (connections, records, cursors, runs, quarantine).

One class serves SQLite and PostgreSQL; ``dialects.py`` holds what differs.
Every write that belongs together runs in one transaction, above all a page's
records with the cursor that follows them (principle 2). Database exceptions
never escape: they become StoreError, and the broken connection is dropped so
the next call reconnects (a restarted PostgreSQL costs one failed call).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from worker.errors import ConnectionExists, StoreError, UnknownConnection, UnknownEvent
from worker.store.dialects import Dialect, dialect_for
from worker.store.models import (
    Connection,
    EntityStatus,
    Event,
    EventStatus,
    PageCommit,
    ParkedJob,
    RecordRow,
    Run,
    RunStatus,
    StoredRecord,
    TransitionRecord,
)
from worker.store.schema import BOOTSTRAP, MIGRATIONS, SCHEMA_VERSION
from worker.timeutil import utc_now

P = ParamSpec("P")
T = TypeVar("T")

_CONNECTION_COLUMNS = (
    "id, name, entity_types, upstream_url, webhook_url, token_ciphertext, token_version, "
    "created_at, updated_at, rate_per_second, rate_burst, max_concurrency, "
    "webhook_secret_ciphertext"
)
_EVENT_COLUMNS = (
    "id, type, connection_id, entity_type, created_at, body, status, attempts, "
    "next_attempt_at, first_attempt_at, last_error, delivered_at, seq"
)
# Events that say the same thing twice in a row are one event: a flushed
# Redis can make a halted connection halt again, but its owner hears it once.
_EVENT_FAMILY = {
    "connection.reauthorization_required": "connection",
    "connection.unavailable": "connection",
    "connection.recovered": "connection",
    "entity.access_lost": "entity",
    "entity.access_restored": "entity",
}
_RUN_COLUMNS = (
    "id, connection_id, entity_type, status, started_at, request_id, trigger, is_full, "
    "finished_at, pages, records, quarantined, tasks, error_kind, error_message, coalesced_into"
)

_PARKED_COLUMNS = (
    "connection_id, entity_type, run_id, due_at, reason, payload, parked_at, times_parked"
)

# Never let an older version overwrite a newer one (principle 2); an equal
# version is rewritten so a repeated page is harmless and refreshes synced_at.
_UPSERT_RECORD = """
INSERT INTO records (connection_id, entity_type, key, data, source_updated_at, deleted_at,
                     synced_at)
VALUES (?, ?, ?, {json_param}, ?, ?, ?)
ON CONFLICT (connection_id, entity_type, key) DO UPDATE SET
    data = excluded.data,
    source_updated_at = excluded.source_updated_at,
    deleted_at = excluded.deleted_at,
    synced_at = excluded.synced_at
WHERE records.source_updated_at <= excluded.source_updated_at
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

_SET_CURSOR = """
INSERT INTO cursors (connection_id, entity_type, since, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (connection_id, entity_type) DO UPDATE SET
    since = excluded.since, updated_at = excluded.updated_at
"""


class _Tx:
    """A cursor inside one transaction, speaking the store's ``?`` SQL."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self._dialect = dialect

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        self._cursor.execute(self._dialect.sql(statement), tuple(params))
        return self._cursor

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cursor.executemany(self._dialect.sql(statement), rows)


def _translated(method: Callable[P, T]) -> Callable[P, T]:
    """Turn database exceptions into StoreError and drop the broken connection."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        store = args[0]
        assert isinstance(store, SqlStore)
        try:
            return method(*args, **kwargs)
        except store.dialect.errors as exc:
            store.drop_connection()
            raise StoreError(f"{store.dialect.name} store: {exc}") from exc

    return wrapper


class SqlStore:
    """The store over one SQL database; safe for threads and forked processes."""

    def __init__(self, url: str) -> None:
        self.dialect = dialect_for(url)
        self._local = threading.local()

    # -- connections to the database ------------------------------------------

    def _db(self) -> Any:
        # One connection per thread and per process: a forked Celery child
        # must never reuse its parent's socket or SQLite handle.
        pid = os.getpid()
        if getattr(self._local, "pid", None) != pid or self._local.conn is None:
            self._local.conn = self.dialect.connect()
            self._local.pid = pid
        return self._local.conn

    def drop_connection(self) -> None:
        """Forget this thread's database connection; the next call reconnects."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):  # it is broken already; we only let go
                conn.close()

    @contextmanager
    def _write(self) -> Iterator[_Tx]:
        cursor = self._db().cursor()
        cursor.execute(self.dialect.begin_write)
        try:
            yield _Tx(cursor, self.dialect)
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")

    def _read(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._db().cursor()
        cursor.execute(self.dialect.sql(statement), tuple(params))
        return list(cursor.fetchall())

    # -- schema -----------------------------------------------------------------

    @_translated
    def migrate(self) -> None:
        """Bring the schema up to SCHEMA_VERSION; refuse a newer one."""
        with self._write() as tx:
            if self.dialect.migration_lock:
                tx.execute(self.dialect.migration_lock)
            tx.execute(BOOTSTRAP)
            rows = tx.execute("SELECT version FROM schema_version").fetchall()
            current = int(rows[0][0]) if rows else 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the store has schema version {current}, newer than this "
                    f"entity-sync ({SCHEMA_VERSION}): upgrade entity-sync"
                )
            for version in sorted(v for v in MIGRATIONS if v > current):
                for statement in MIGRATIONS[version]:
                    tx.execute(statement)
            if not rows:
                tx.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif current < SCHEMA_VERSION:
                tx.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    # -- connection registry -----------------------------------------------------

    @_translated
    def add_connection(self, connection: Connection) -> None:
        """Register a connection; ConnectionExists if the id is taken."""
        now = utc_now()
        with self._write() as tx:
            if tx.execute("SELECT 1 FROM connections WHERE id = ?", (connection.id,)).fetchall():
                raise ConnectionExists(f"connection {connection.id!r} already exists")
            tx.execute(
                f"INSERT INTO connections ({_CONNECTION_COLUMNS}) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    connection.id,
                    connection.name,
                    ",".join(connection.entity_types),
                    connection.upstream_url,
                    connection.webhook_url,
                    connection.token_ciphertext,
                    connection.token_version,
                    now,
                    now,
                    connection.rate_per_second,
                    connection.rate_burst,
                    connection.max_concurrency,
                    connection.webhook_secret_ciphertext,
                ),
            )

    @_translated
    def get_connection(self, connection_id: str) -> Connection:
        """The connection with this id; UnknownConnection if there is none."""
        rows = self._read(
            f"SELECT {_CONNECTION_COLUMNS} FROM connections WHERE id = ?", (connection_id,)
        )
        if not rows:
            raise UnknownConnection(f"unknown connection {connection_id!r}")
        return _connection(rows[0])

    @_translated
    def list_connections(self) -> list[Connection]:
        """Every registered connection, by id."""
        rows = self._read(f"SELECT {_CONNECTION_COLUMNS} FROM connections ORDER BY id")
        return [_connection(row) for row in rows]

    @_translated
    def update_connection(
        self,
        connection_id: str,
        *,
        name: str | None = None,
        entity_types: Sequence[str] | None = None,
        upstream_url: str | None = None,
        webhook_url: str | None = None,
    ) -> Connection:
        """Change the given fields of a connection and return it."""
        current = self.get_connection(connection_id)
        with self._write() as tx:
            tx.execute(
                "UPDATE connections SET name = ?, entity_types = ?, upstream_url = ?, "
                "webhook_url = ?, updated_at = ? WHERE id = ?",
                (
                    current.name if name is None else name,
                    ",".join(current.entity_types if entity_types is None else entity_types),
                    current.upstream_url if upstream_url is None else upstream_url,
                    current.webhook_url if webhook_url is None else webhook_url,
                    utc_now(),
                    connection_id,
                ),
            )
        return self.get_connection(connection_id)

    @_translated
    def set_webhook(
        self, connection_id: str, *, url: str | None, secret_ciphertext: str | None
    ) -> None:
        """Set where a connection's events go, and (optionally) its own signing secret."""
        with self._write() as tx:
            updated = tx.execute(
                "UPDATE connections SET webhook_url = ?, webhook_secret_ciphertext = "
                "COALESCE(?, webhook_secret_ciphertext), updated_at = ? WHERE id = ?",
                (url, secret_ciphertext, utc_now(), connection_id),
            ).rowcount
            if not updated:
                raise UnknownConnection(f"unknown connection {connection_id!r}")

    @_translated
    def set_limits(
        self,
        connection_id: str,
        *,
        rate_per_second: float | None,
        rate_burst: int | None,
        max_concurrency: int | None,
    ) -> None:
        """Set (None: clear) a connection's rate and concurrency overrides."""
        with self._write() as tx:
            updated = tx.execute(
                "UPDATE connections SET rate_per_second = ?, rate_burst = ?, max_concurrency = ?, "
                "updated_at = ? WHERE id = ?",
                (rate_per_second, rate_burst, max_concurrency, utc_now(), connection_id),
            ).rowcount
            if not updated:
                raise UnknownConnection(f"unknown connection {connection_id!r}")

    @_translated
    def set_token(self, connection_id: str, token_ciphertext: str) -> int:
        """Store a new encrypted token; returns the connection's new token version."""
        with self._write() as tx:
            updated = tx.execute(
                "UPDATE connections SET token_ciphertext = ?, token_version = token_version + 1, "
                "updated_at = ? WHERE id = ?",
                (token_ciphertext, utc_now(), connection_id),
            ).rowcount
            if not updated:
                raise UnknownConnection(f"unknown connection {connection_id!r}")
            rows = tx.execute(
                "SELECT token_version FROM connections WHERE id = ?", (connection_id,)
            ).fetchall()
        return int(rows[0][0])

    @_translated
    def replace_ciphertexts(
        self, *, tokens: dict[str, str], webhook_secrets: dict[str, str]
    ) -> None:
        """Swap stored ciphertexts in one transaction (key rotation; same secrets)."""
        with self._write() as tx:
            tx.executemany(
                "UPDATE connections SET token_ciphertext = ? WHERE id = ?",
                [(text, connection_id) for connection_id, text in tokens.items()],
            )
            tx.executemany(
                "UPDATE connections SET webhook_secret_ciphertext = ? WHERE id = ?",
                [(text, connection_id) for connection_id, text in webhook_secrets.items()],
            )

    @_translated
    def remove_connection(self, connection_id: str) -> None:
        """Delete a connection and everything synced for it."""
        with self._write() as tx:
            for table in (
                "records",
                "cursors",
                "quarantine",
                "parked_jobs",
                "transitions",
                "events",
            ):
                tx.execute(f"DELETE FROM {table} WHERE connection_id = ?", (connection_id,))
            tx.execute("DELETE FROM runs WHERE connection_id = ?", (connection_id,))
            if not tx.execute("DELETE FROM connections WHERE id = ?", (connection_id,)).rowcount:
                raise UnknownConnection(f"unknown connection {connection_id!r}")

    # -- runs --------------------------------------------------------------------

    @_translated
    def start_run(self, run: Run) -> None:
        """Record a run as started; a full run forgets the cursor in the same step."""
        with self._write() as tx:
            _insert_run(tx, run)
            if run.full and run.connection_id and run.entity_type:
                tx.execute(
                    "DELETE FROM cursors WHERE connection_id = ? AND entity_type = ?",
                    (run.connection_id, run.entity_type),
                )

    @_translated
    def record_run(self, run: Run) -> None:
        """Record a run that is already over (skipped, rejected) in one step."""
        with self._write() as tx:
            _insert_run(tx, run)

    @_translated
    def touch_run(self, run_id: str, connection_id: str, entity_type: str) -> None:
        """A task starts work on this run: count it, and unpark the run if it was parked."""
        with self._write() as tx:
            tx.execute(
                "UPDATE runs SET tasks = tasks + 1, status = CASE WHEN status = 'deferred' "
                "THEN 'running' ELSE status END WHERE id = ?",
                (run_id,),
            )
            tx.execute(
                "DELETE FROM parked_jobs WHERE connection_id = ? AND entity_type = ? "
                "AND run_id = ?",
                (connection_id, entity_type, run_id),
            )

    @_translated
    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        error_kind: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Close a run with its outcome (only a run that is still open)."""
        with self._write() as tx:
            tx.execute(
                "UPDATE runs SET status = ?, finished_at = ?, error_kind = ?, error_message = ? "
                "WHERE id = ? AND status IN ('running', 'deferred')",
                (status.value, utc_now(), error_kind, error_message, run_id),
            )

    @_translated
    def get_run(self, run_id: str) -> Run | None:
        """One run by id."""
        rows = self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        return _run(rows[0]) if rows else None

    @_translated
    def runs_for_request(self, request_id: str) -> list[Run]:
        """Every run started for one sync request, oldest first."""
        rows = self._read(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE request_id = ? ORDER BY started_at",
            (request_id,),
        )
        return [_run(row) for row in rows]

    @_translated
    def recent_runs(self, *, limit: int = 50, status: str | None = None) -> list[Run]:
        """The newest runs, optionally of one status."""
        where = "WHERE status = ?" if status else ""
        params: tuple[Any, ...] = (status, limit) if status else (limit,)
        rows = self._read(
            f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY started_at DESC LIMIT ?", params
        )
        return [_run(row) for row in rows]

    # -- records and cursors -----------------------------------------------------

    @_translated
    def commit_page(self, commit: PageCommit) -> None:
        """Store a page's records, quarantine, cursor and run progress atomically."""
        now = utc_now()
        conn_id, entity = commit.connection_id, commit.entity_type
        with self._write() as tx:
            tx.executemany(
                _UPSERT_RECORD,
                [
                    (conn_id, entity, r.key, r.data_json, r.updated_at, r.deleted_at, now)
                    for r in commit.records
                ],
            )
            tx.executemany(
                _UPSERT_QUARANTINE,
                [
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
                ],
            )
            tx.execute(_SET_CURSOR, (conn_id, entity, commit.cursor, now))
            tx.execute(
                "UPDATE runs SET pages = pages + 1, records = records + ?, "
                "quarantined = quarantined + ? WHERE id = ?",
                (len(commit.records), len(commit.quarantined), commit.run_id),
            )

    @_translated
    def get_cursor(self, connection_id: str, entity_type: str) -> str | None:
        """The inclusive lower bound the next page request starts from."""
        rows = self._read(
            "SELECT since FROM cursors WHERE connection_id = ? AND entity_type = ?",
            (connection_id, entity_type),
        )
        return rows[0][0] if rows else None

    @_translated
    def records(self, connection_id: str, entity_type: str) -> list[StoredRecord]:
        """Every stored record of one pair, deleted ones included, by key."""
        rows = self._read(
            "SELECT key, data, source_updated_at, deleted_at, synced_at FROM records "
            "WHERE connection_id = ? AND entity_type = ? ORDER BY key",
            (connection_id, entity_type),
        )
        return [
            StoredRecord(
                key=row[0],
                data=json.loads(row[1]) if isinstance(row[1], str) else row[1],
                updated_at=row[2],
                deleted_at=row[3],
                synced_at=row[4],
            )
            for row in rows
        ]

    @_translated
    def quarantined(self, connection_id: str, entity_type: str) -> list[tuple[str | None, str]]:
        """(record key, reason) of every quarantined record of one pair."""
        rows = self._read(
            "SELECT record_key, reason FROM quarantine WHERE connection_id = ? "
            "AND entity_type = ? ORDER BY first_seen_at",
            (connection_id, entity_type),
        )
        return [(row[0], row[1]) for row in rows]

    @_translated
    def entity_statuses(self, connection_id: str | None = None) -> list[EntityStatus]:
        """Per (connection, entity type): counts, cursor, last run, last success."""
        connections = (
            [self.get_connection(connection_id)] if connection_id else self.list_connections()
        )
        counts = self._grouped(
            "SELECT connection_id, entity_type, COUNT(*), "
            "SUM(CASE WHEN deleted_at IS NULL THEN 0 ELSE 1 END) FROM records "
            "GROUP BY connection_id, entity_type"
        )
        quarantined = self._grouped(
            "SELECT connection_id, entity_type, COUNT(*) FROM quarantine "
            "GROUP BY connection_id, entity_type"
        )
        cursors = self._grouped("SELECT connection_id, entity_type, since FROM cursors")
        successes = self._grouped(
            "SELECT connection_id, entity_type, MAX(finished_at) FROM runs "
            "WHERE status = 'succeeded' GROUP BY connection_id, entity_type"
        )
        last_runs = {
            (run.connection_id, run.entity_type): run
            for run in (
                _run(row)
                for row in self._read(
                    f"SELECT {_RUN_COLUMNS} FROM runs r WHERE started_at = ("
                    "SELECT MAX(started_at) FROM runs x WHERE x.connection_id = r.connection_id "
                    "AND x.entity_type = r.entity_type AND x.status <> 'skipped')"
                )
            )
        }
        statuses = []
        for connection in connections:
            for entity in connection.entity_types:
                pair = (connection.id, entity)
                record_count, deleted = counts.get(pair, (0, 0))
                statuses.append(
                    EntityStatus(
                        connection_id=connection.id,
                        entity_type=entity,
                        records=int(record_count or 0),
                        deleted=int(deleted or 0),
                        quarantined=int(quarantined.get(pair, (0,))[0] or 0),
                        cursor=cursors.get(pair, (None,))[0],
                        last_run=last_runs.get(pair),
                        last_success_at=successes.get(pair, (None,))[0],
                    )
                )
        return statuses

    # -- parked jobs -------------------------------------------------------------

    @_translated
    def park_job(self, job: ParkedJob) -> str | None:
        """Park a job (one per pair: a newer one replaces it); marks its run deferred.

        Returns the id of a run that the new job supersedes, if any; that run
        is closed as skipped.
        """
        now = utc_now()
        with self._write() as tx:
            rows = tx.execute(
                "SELECT run_id FROM parked_jobs WHERE connection_id = ? AND entity_type = ?",
                (job.connection_id, job.entity_type),
            ).fetchall()
            superseded = rows[0][0] if rows and rows[0][0] != job.run_id else None
            tx.execute(
                "INSERT INTO parked_jobs (connection_id, entity_type, run_id, due_at, reason, "
                "payload, parked_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (connection_id, entity_type) DO UPDATE SET run_id = excluded.run_id, "
                "due_at = excluded.due_at, reason = excluded.reason, payload = excluded.payload, "
                "parked_at = excluded.parked_at, times_parked = parked_jobs.times_parked + 1",
                (
                    job.connection_id,
                    job.entity_type,
                    job.run_id,
                    job.due_at,
                    job.reason,
                    job.payload_json,
                    now,
                ),
            )
            tx.execute(
                "UPDATE runs SET status = 'deferred', error_message = ? "
                "WHERE id = ? AND status IN ('running', 'deferred')",
                (job.reason, job.run_id),
            )
            if superseded:
                tx.execute(
                    "UPDATE runs SET status = 'skipped', finished_at = ?, coalesced_into = ?, "
                    "error_message = 'superseded by a newer run' "
                    "WHERE id = ? AND status IN ('running', 'deferred')",
                    (now, job.run_id, superseded),
                )
        return superseded

    @_translated
    def claim_due_jobs(self, *, now: str, claim_until: str, limit: int) -> list[ParkedJob]:
        """Parked jobs due by ``now``, claimed until ``claim_until``.

        A claimed job stays parked (its due time pushed to ``claim_until``)
        until its task starts (``touch_run``), so a crash between claiming and
        sending loses nothing: the job comes due again.
        """
        with self._write() as tx:
            rows = tx.execute(
                f"SELECT {_PARKED_COLUMNS} FROM parked_jobs WHERE due_at <= ? "
                "ORDER BY due_at LIMIT ?",
                (now, limit),
            ).fetchall()
            tx.executemany(
                "UPDATE parked_jobs SET due_at = ? WHERE connection_id = ? AND entity_type = ?",
                [(claim_until, row[0], row[1]) for row in rows],
            )
        return [_parked(row) for row in rows]

    @_translated
    def parked_jobs(self, connection_id: str | None = None) -> list[ParkedJob]:
        """Every parked job (of one connection), soonest first."""
        where, params = ("WHERE connection_id = ?", (connection_id,)) if connection_id else ("", ())
        rows = self._read(
            f"SELECT {_PARKED_COLUMNS} FROM parked_jobs {where} ORDER BY due_at", params
        )
        return [_parked(row) for row in rows]

    # -- transitions ---------------------------------------------------------------

    @_translated
    def record_transition(self, transition: TransitionRecord, event: Event | None = None) -> bool:
        """Append a state change, and its event to the outbox, in one transaction.

        Returns whether the event was written: it is not when the connection's
        (or the entity type's) latest event already says the same thing.
        """
        with self._write() as tx:
            tx.execute(
                "INSERT INTO transitions (connection_id, entity_type, from_state, to_state, "
                "reason, until_at, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    transition.connection_id,
                    transition.entity_type,
                    transition.from_state,
                    transition.to_state,
                    transition.reason,
                    transition.until_at,
                    transition.at,
                ),
            )
            if event is None or _repeats(tx, event):
                return False
            _insert_event(tx, event)
        return True

    @_translated
    def add_event(self, event: Event) -> bool:
        """Put an event that no breaker transition carries in the outbox (deduplicated)."""
        with self._write() as tx:
            if _repeats(tx, event):
                return False
            _insert_event(tx, event)
        return True

    @_translated
    def unhealthy_since(self, connection_id: str) -> str | None:
        """When the connection's breaker last left ``closed`` without coming back."""
        rows = self._read(
            "SELECT to_state, at FROM transitions WHERE connection_id = ? "
            "AND entity_type IS NULL ORDER BY id DESC LIMIT 50",
            (connection_id,),
        )
        since = None
        for to_state, at in rows:
            if to_state == "closed":
                break
            since = at
        return since

    @_translated
    def last_event_type(self, connection_id: str, entity_type: str | None) -> str | None:
        """The type of the newest event of a connection (or one of its entity types)."""
        rows = self._read(
            "SELECT type FROM events WHERE connection_id = ? AND "
            + ("entity_type IS NULL" if entity_type is None else "entity_type = ?")
            + " ORDER BY seq DESC LIMIT 1",
            (connection_id,) if entity_type is None else (connection_id, entity_type),
        )
        return rows[0][0] if rows else None

    # -- the outbox --------------------------------------------------------------------

    @_translated
    def events(
        self,
        *,
        connection_id: str | None = None,
        status: str | None = None,
        failed_only: bool = False,
        limit: int = 100,
    ) -> list[Event]:
        """Events, newest last, filtered by connection and status."""
        clauses: list[str] = []
        params: list[Any] = []
        if connection_id:
            clauses.append("connection_id = ?")
            params.append(connection_id)
        if status:
            clauses.append("status = ?")
            params.append(status)
        if failed_only:
            clauses.append("attempts > 0 AND status = 'pending'")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events {where} ORDER BY seq DESC LIMIT ?",
            (*params, limit),
        )
        return [_event(row) for row in reversed(rows)]

    @_translated
    def get_event(self, event_id: str) -> Event | None:
        """One event by id."""
        rows = self._read(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,))
        return _event(rows[0]) if rows else None

    @_translated
    def pending_events(self, connection_id: str) -> list[Event]:
        """A connection's undelivered events, in the order they must arrive."""
        rows = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE connection_id = ? AND status = 'pending' "
            "ORDER BY seq",
            (connection_id,),
        )
        return [_event(row) for row in rows]

    @_translated
    def connections_with_due_events(self, *, now: str, limit: int = 1000) -> list[str]:
        """Connections with a pending event whose next attempt is due."""
        rows = self._read(
            "SELECT DISTINCT connection_id FROM events WHERE status = 'pending' "
            "AND next_attempt_at <= ? LIMIT ?",
            (now, limit),
        )
        return [row[0] for row in rows]

    @_translated
    def mark_event(
        self,
        event_id: str,
        *,
        status: EventStatus,
        attempted_at: str,
        next_attempt_at: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record one delivery attempt's outcome."""
        with self._write() as tx:
            tx.execute(
                "UPDATE events SET status = ?, attempts = attempts + 1, "
                "first_attempt_at = COALESCE(first_attempt_at, ?), "
                "next_attempt_at = COALESCE(?, next_attempt_at), last_error = ?, "
                "delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END "
                "WHERE id = ?",
                (
                    status.value,
                    attempted_at,
                    next_attempt_at,
                    error,
                    status.value,
                    attempted_at,
                    event_id,
                ),
            )

    @_translated
    def redeliver(self, event_id: str, *, now: str) -> Event:
        """Queue an event again (dead, failed or delivered); it keeps its id."""
        with self._write() as tx:
            updated = tx.execute(
                "UPDATE events SET status = 'pending', next_attempt_at = ?, "
                "first_attempt_at = NULL, last_error = NULL WHERE id = ?",
                (now, event_id),
            ).rowcount
        if not updated:
            raise UnknownEvent(f"unknown event {event_id!r}")
        event = self.get_event(event_id)
        assert event is not None
        return event

    @_translated
    def transitions(self, connection_id: str, *, limit: int = 100) -> list[TransitionRecord]:
        """The newest state changes of a connection, oldest first."""
        rows = self._read(
            "SELECT id, connection_id, entity_type, from_state, to_state, reason, until_at, at "
            "FROM transitions WHERE connection_id = ? ORDER BY id DESC LIMIT ?",
            (connection_id, limit),
        )
        return [
            TransitionRecord(
                id=int(row[0]),
                connection_id=row[1],
                entity_type=row[2],
                from_state=row[3],
                to_state=row[4],
                reason=row[5],
                until_at=row[6],
                at=row[7],
            )
            for row in reversed(rows)
        ]

    def _grouped(self, statement: str) -> dict[tuple[str, str], tuple[Any, ...]]:
        return {(row[0], row[1]): tuple(row[2:]) for row in self._read(statement)}


def _insert_run(tx: _Tx, run: Run) -> None:
    tx.execute(
        f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            run.id,
            run.connection_id,
            run.entity_type,
            run.status,
            run.started_at,
            run.request_id,
            run.trigger,
            run.full,
            run.finished_at,
            run.pages,
            run.records,
            run.quarantined,
            run.tasks,
            run.error_kind,
            run.error_message,
            run.coalesced_into,
        ),
    )


def _insert_event(tx: _Tx, event: Event) -> None:
    tx.execute(
        "INSERT INTO events (id, type, connection_id, entity_type, created_at, body, status, "
        "next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.id,
            event.type,
            event.connection_id,
            event.entity_type,
            event.created_at,
            event.body_json,
            EventStatus.PENDING.value,
            event.next_attempt_at or event.created_at,
        ),
    )


def _repeats(tx: _Tx, event: Event) -> bool:
    """Whether the latest event of the same subject already says this."""
    family = _EVENT_FAMILY.get(event.type)
    if family is None:
        return False
    if event.entity_type is None:
        query = "entity_type IS NULL"
        params: tuple[Any, ...] = (event.connection_id,)
    else:
        query = "entity_type = ?"
        params = (event.connection_id, event.entity_type)
    rows = tx.execute(
        f"SELECT type FROM events WHERE connection_id = ? AND {query} ORDER BY seq DESC LIMIT 1",
        params,
    ).fetchall()
    return bool(rows) and rows[0][0] == event.type


def _event(row: Sequence[Any]) -> Event:
    return Event(
        id=row[0],
        type=row[1],
        connection_id=row[2],
        entity_type=row[3],
        created_at=row[4],
        body_json=row[5],
        status=row[6],
        attempts=int(row[7]),
        next_attempt_at=row[8],
        first_attempt_at=row[9],
        last_error=row[10],
        delivered_at=row[11],
        seq=int(row[12]),
    )


def _parked(row: Sequence[Any]) -> ParkedJob:
    return ParkedJob(
        connection_id=row[0],
        entity_type=row[1],
        run_id=row[2],
        due_at=row[3],
        reason=row[4],
        payload_json=row[5],
        parked_at=row[6],
        times_parked=int(row[7]),
    )


def _connection(row: Sequence[Any]) -> Connection:
    return Connection(
        id=row[0],
        name=row[1],
        entity_types=tuple(t for t in row[2].split(",") if t),
        upstream_url=row[3],
        webhook_url=row[4],
        token_ciphertext=row[5],
        token_version=int(row[6]),
        created_at=row[7],
        updated_at=row[8],
        rate_per_second=row[9],
        rate_burst=row[10],
        max_concurrency=row[11],
        webhook_secret_ciphertext=row[12],
    )


def _run(row: Sequence[Any]) -> Run:
    return Run(
        id=row[0],
        connection_id=row[1],
        entity_type=row[2],
        status=row[3],
        started_at=row[4],
        request_id=row[5],
        trigger=row[6],
        full=bool(row[7]),
        finished_at=row[8],
        pages=int(row[9]),
        records=int(row[10]),
        quarantined=int(row[11]),
        tasks=int(row[12]),
        error_kind=row[13],
        error_message=row[14],
        coalesced_into=row[15],
    )


__all__ = ["RecordRow", "SqlStore"]
