"""The store's foundation: one database connection per thread and process, transactions.

Every write that belongs together runs in one transaction (``_write``).
Database exceptions never escape a public method: ``translated`` turns them
into StoreError and drops the broken connection, so the next call reconnects
(a restarted PostgreSQL costs one failed call).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from worker.errors import StoreError
from worker.store.dialects import Dialect, dialect_for
from worker.store.schema import BOOTSTRAP, MIGRATIONS, SCHEMA_VERSION

P = ParamSpec("P")
T = TypeVar("T")


class Tx:
    """A cursor inside one transaction, speaking the store's ``?`` SQL."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self._dialect = dialect

    @property
    def dialect_name(self) -> str:
        """``sqlite`` or ``postgresql``: for the few statements written per backend."""
        return self._dialect.name

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        self._cursor.execute(self._dialect.sql(statement), tuple(params))
        return self._cursor

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cursor.executemany(self._dialect.sql(statement), rows)


def translated(method: Callable[P, T]) -> Callable[P, T]:
    """Turn database exceptions into StoreError and drop the broken connection."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        store = args[0]
        assert isinstance(store, StoreBase)
        try:
            return method(*args, **kwargs)
        except store.dialect.errors as exc:
            store.drop_connection()
            raise StoreError(f"{store.dialect.name} store: {exc}") from exc

    return wrapper


class StoreBase:
    """One SQL database; safe for threads and forked processes."""

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
    def _write(self) -> Iterator[Tx]:
        with self.dialect.write_lock():
            cursor = self._db().cursor()
            cursor.execute(self.dialect.begin_write)
            try:
                yield Tx(cursor, self.dialect)
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    def _read(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._db().cursor()
        cursor.execute(self.dialect.sql(statement), tuple(params))
        return list(cursor.fetchall())

    # -- schema -----------------------------------------------------------------

    @translated
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
