"""What differs between SQLite and PostgreSQL, and nothing else.

A Dialect opens a DB-API connection configured for many worker processes,
rewrites the store's ``?`` placeholders, fills the schema's type slots, and
names the exceptions that mean "the database failed".
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

# SQLite waits this long for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_S = 30.0
# Statements a dialect keeps translated. The store's statements are fixed texts,
# but some list one mark per key (``IN (?,?,...)``): a bound keeps those from growing it.
_SQL_CACHE_SIZE = 1024


@dataclass(frozen=True)
class Dialect:
    """One SQL backend: how to connect and how its SQL differs."""

    name: str
    connect: Callable[[], Any]
    placeholder: str  # what the store's "?" becomes
    json_type: str
    bool_type: str
    autoid_type: str
    json_param: str  # a JSON text parameter, cast where the column is typed
    begin_write: str  # starts a transaction that will write
    migration_lock: str | None  # serialises concurrent migrations, where BEGIN does not
    errors: tuple[type[BaseException], ...]
    # Held around each write transaction of this process (``StoreBase._write``).
    write_lock: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    # Translating costs a few string passes; a page's commit runs the same
    # statements every time (BENCHMARKS.md "Where the worker's time goes").
    _translated: dict[str, str] = field(default_factory=dict, init=False, compare=False, repr=False)

    def sql(self, statement: str) -> str:
        """The statement with placeholders and type slots for this backend."""
        translated = self._translated.get(statement)
        if translated is None:
            translated = self._translate(statement)
            if len(self._translated) < _SQL_CACHE_SIZE:
                self._translated[statement] = translated
        return translated

    def _translate(self, statement: str) -> str:
        filled = statement.replace("{json}", self.json_type).replace("{bool}", self.bool_type)
        filled = filled.replace("{autoid}", self.autoid_type)
        filled = filled.replace("{json_param}", self.json_param)
        return filled if self.placeholder == "?" else filled.replace("?", self.placeholder)


# SQLite has one writer at a time. Threads of one process that wait for it in
# SQLite's busy handler sleep in steps of up to 100 ms and wake to find it taken
# again; waiting on a lock here, each wakes as soon as the writer before it is
# done. Other processes still meet the busy timeout.
_writers: dict[str, threading.RLock] = {}
_writers_guard = threading.Lock()


def _sqlite_writer(path: Path) -> Callable[[], AbstractContextManager[Any]]:
    key = str(path.resolve())

    @contextlib.contextmanager
    def lock() -> Iterator[None]:
        with _writers_guard:
            writer = _writers.setdefault(key, threading.RLock())
        # Past the busy timeout, go on to SQLite's own wait and its "database is
        # locked": a stuck writer fails the others as it did without this lock.
        held = writer.acquire(timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            yield
        finally:
            if held:
                writer.release()

    return lock


def _forget_writers() -> None:
    # A forked child starts with no writer: a lock another thread of the parent
    # held at the fork would never be released in the child.
    global _writers_guard
    _writers.clear()
    _writers_guard = threading.Lock()


os.register_at_fork(after_in_child=_forget_writers)


def _sqlite_path(url: str) -> Path:
    # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy spells them.
    return Path(url.removeprefix("sqlite:///"))


def _make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents 0700; existing ones are left alone."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        try:
            new.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another process made it first: its mode is its own
        new.chmod(0o700)  # the umask may have taken bits of the mode away from us


def _create_private(path: Path) -> None:
    """Create the database file 0600 if it does not exist yet.

    SQLite creates a new database 0644, and its ``-wal`` and ``-shm`` files
    with the database file's mode: created here first (an empty file is an
    empty database), all three are private. The store holds tokens and every
    customer's records. An existing file keeps the mode its operator gave it.
    """
    _make_private_dirs(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)  # a umask cannot add bits, but be exact
    finally:
        os.close(fd)


def sqlite_dialect(url: str) -> Dialect:
    """SQLite in WAL mode: many readers, one writer at a time, across processes."""
    path = _sqlite_path(url)

    def connect() -> sqlite3.Connection:
        _create_private(path)
        # isolation_level=None: we issue BEGIN ourselves, so a write transaction
        # takes the write lock up front (BEGIN IMMEDIATE) instead of failing to
        # upgrade a read lock halfway through under contention.
        conn = sqlite3.connect(
            path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it atomic
        conn.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        return conn

    return Dialect(
        name="sqlite",
        connect=connect,
        placeholder="?",
        json_type="TEXT",
        bool_type="INTEGER",
        autoid_type="INTEGER PRIMARY KEY AUTOINCREMENT",
        json_param="?",
        begin_write="BEGIN IMMEDIATE",
        migration_lock=None,  # BEGIN IMMEDIATE already holds the only write lock
        errors=(sqlite3.Error,),
        write_lock=_sqlite_writer(path),
    )


def postgres_dialect(url: str) -> Dialect:
    """PostgreSQL through psycopg 3, one connection per worker process."""
    dsn = url.replace("postgres://", "postgresql://", 1)

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)

    return Dialect(
        name="postgresql",
        connect=connect,
        placeholder="%s",
        json_type="JSONB",
        bool_type="BOOLEAN",
        autoid_type="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        json_param="CAST(%s AS JSONB)",
        begin_write="BEGIN",
        # Prefork children all open the store at once; without this, two of
        # them race to create the same table.
        migration_lock="SELECT pg_advisory_xact_lock(7453901)",
        errors=(psycopg.Error,),
    )


def dialect_for(url: str) -> Dialect:
    """The dialect a store URL names (settings already checked the scheme)."""
    if url.startswith("sqlite:"):
        return sqlite_dialect(url)
    return postgres_dialect(url)
