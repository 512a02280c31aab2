"""The store's schema: the contract that consuming services read.

Version 1. Every instant is canonical UTC text (``worker.timeutil``), so text
order is time order in both SQLite and PostgreSQL. ``{json}`` is TEXT in
SQLite and JSONB in PostgreSQL; ``{bool}`` is INTEGER or BOOLEAN.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

# Each statement runs once, in order, when the store is first opened.
DDL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS schema_version (
        version INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS connections (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        entity_types TEXT NOT NULL,
        upstream_url TEXT,
        webhook_url TEXT,
        token_ciphertext TEXT,
        token_version INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS records (
        connection_id TEXT NOT NULL,
        entity_type TEXT NOT NULL,
        key TEXT NOT NULL,
        data {json} NOT NULL,
        source_updated_at TEXT NOT NULL,
        deleted_at TEXT,
        synced_at TEXT NOT NULL,
        PRIMARY KEY (connection_id, entity_type, key)
    )""",
    """CREATE TABLE IF NOT EXISTS cursors (
        connection_id TEXT NOT NULL,
        entity_type TEXT NOT NULL,
        since TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (connection_id, entity_type)
    )""",
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY,
        request_id TEXT,
        connection_id TEXT,
        entity_type TEXT,
        trigger TEXT NOT NULL,
        is_full {bool} NOT NULL,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        pages INTEGER NOT NULL DEFAULT 0,
        records INTEGER NOT NULL DEFAULT 0,
        quarantined INTEGER NOT NULL DEFAULT 0,
        tasks INTEGER NOT NULL DEFAULT 0,
        error_kind TEXT,
        error_message TEXT,
        coalesced_into TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS runs_by_pair ON runs (connection_id, entity_type, started_at)",
    "CREATE INDEX IF NOT EXISTS runs_by_request ON runs (request_id)",
    """CREATE TABLE IF NOT EXISTS quarantine (
        connection_id TEXT NOT NULL,
        entity_type TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        record_key TEXT,
        reason TEXT NOT NULL,
        raw TEXT NOT NULL,
        run_id TEXT NOT NULL,
        first_seen_at TEXT NOT NULL,
        last_seen_at TEXT NOT NULL,
        times_seen INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (connection_id, entity_type, fingerprint)
    )""",
)
