"""What differs between SQLite and PostgreSQL, and nothing else.

A Dialect opens a DB-API connection configured for many worker processes,
rewrites the store's ``?`` placeholders, fills the schema's type slots, and
names the exceptions that mean "the database failed".
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

# SQLite waits this long for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_S = 30.0


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

    def sql(self, statement: str) -> str:
        """The statement with placeholders and type slots for this backend."""
        filled = statement.replace("{json}", self.json_type).replace("{bool}", self.bool_type)
        filled = filled.replace("{autoid}", self.autoid_type)
        filled = filled.replace("{json_param}", self.json_param)
        return filled if self.placeholder == "?" else filled.replace("?", self.placeholder)


def _sqlite_path(url: str) -> Path:
    # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy spells them.
    return Path(url.removeprefix("sqlite:///"))


def sqlite_dialect(url: str) -> Dialect:
    """SQLite in WAL mode: many readers, one writer at a time, across processes."""
    path = _sqlite_path(url)

    def connect() -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
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
