"""The SQL store: the truth (principle 1). SQLite by default, PostgreSQL for many machines.

``open_store(url)`` returns a migrated SqlStore; ``models`` holds the values
that go in and out.
"""

from __future__ import annotations

from worker.store.models import (
    Connection,
    EntityStatus,
    PageCommit,
    ParkedJob,
    QuarantinedRecord,
    RecordRow,
    Run,
    RunStatus,
    StoredRecord,
    TransitionRecord,
)
from worker.store.sql import SqlStore


def open_store(url: str) -> SqlStore:
    """Open the store at ``url`` and create or check its schema."""
    store = SqlStore(url)
    store.migrate()
    return store


__all__ = [
    "Connection",
    "EntityStatus",
    "PageCommit",
    "ParkedJob",
    "QuarantinedRecord",
    "RecordRow",
    "Run",
    "RunStatus",
    "SqlStore",
    "StoredRecord",
    "TransitionRecord",
    "open_store",
]
