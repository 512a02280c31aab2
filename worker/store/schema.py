"""The store's schema: the contract that consuming services read.

Every instant is canonical UTC text (``worker.timeutil``), so text
order is time order in both SQLite and PostgreSQL. ``{json}`` is TEXT in
SQLite and JSONB in PostgreSQL; ``{bool}`` is INTEGER or BOOLEAN; ``{autoid}``
an ever-growing integer primary key.
"""

from __future__ import annotations

# Migrations by the version they bring the store to; each runs once, in order,
# in one transaction with the version bump. Never edit a shipped one: add the next.
MIGRATIONS: dict[int, tuple[str, ...]] = {}

BOOTSTRAP = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
)"""

MIGRATIONS[1] = (
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

# Version 2: per-connection limits, jobs parked behind a breaker or pause, and
# the breaker transitions.
MIGRATIONS[2] = (
    "ALTER TABLE connections ADD COLUMN rate_per_second REAL",
    "ALTER TABLE connections ADD COLUMN rate_burst INTEGER",
    "ALTER TABLE connections ADD COLUMN max_concurrency INTEGER",
    "ALTER TABLE connections ADD COLUMN webhook_secret_ciphertext TEXT",
    # Scheduling: the interval (NULL: the default) and the last slot enqueued.
    "ALTER TABLE connections ADD COLUMN sync_interval_s INTEGER",
    "ALTER TABLE connections ADD COLUMN last_slot BIGINT",
    """CREATE TABLE schedule_log (
        connection_id TEXT NOT NULL,
        slot BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (connection_id, slot)
    )""",
    """CREATE TABLE parked_jobs (
        connection_id TEXT NOT NULL,
        entity_type TEXT NOT NULL,
        run_id TEXT NOT NULL,
        due_at TEXT NOT NULL,
        reason TEXT NOT NULL,
        payload TEXT NOT NULL,
        parked_at TEXT NOT NULL,
        times_parked INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (connection_id, entity_type)
    )""",
    "CREATE INDEX parked_jobs_due ON parked_jobs (due_at)",
    """CREATE TABLE transitions (
        id {autoid},
        connection_id TEXT NOT NULL,
        entity_type TEXT,
        from_state TEXT NOT NULL,
        to_state TEXT NOT NULL,
        reason TEXT NOT NULL,
        until_at TEXT,
        at TEXT NOT NULL
    )""",
    "CREATE INDEX transitions_by_connection ON transitions (connection_id, id)",
    # The outbox: an event is written with the transition that caused it, and
    # delivered in seq order per connection.
    """CREATE TABLE events (
        seq {autoid},
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        connection_id TEXT NOT NULL,
        entity_type TEXT,
        created_at TEXT NOT NULL,
        body TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        first_attempt_at TEXT,
        last_error TEXT,
        delivered_at TEXT
    )""",
    "CREATE INDEX events_due ON events (status, next_attempt_at)",
    "CREATE INDEX events_by_connection ON events (connection_id, seq)",
)

# Version 3: a run's heartbeat (when it was queued, its last task start or
# committed page) and queue, so a run whose next task was lost with the broker
# can be found and sent again.
MIGRATIONS[3] = (
    "ALTER TABLE runs ADD COLUMN heartbeat_at TEXT",
    "ALTER TABLE runs ADD COLUMN queue TEXT",
    "ALTER TABLE runs ADD COLUMN recoveries INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX runs_by_status ON runs (status, heartbeat_at)",
)

# Version 4: a record's exact text beside ``data`` where ``data`` holds an
# escaped form: PostgreSQL's jsonb holds neither NUL nor NaN, and neither
# store's JSON holds a lone surrogate (docs/records.md). NULL: ``data`` is exact.
MIGRATIONS[4] = ("ALTER TABLE records ADD COLUMN raw TEXT",)

# Version 5: counters kept with the data they count, so monitoring never scans
# a table that grows, and the indexes that let retention delete in small batches.
# ``pair_counts`` is updated in the same transaction as each page; ``run_totals``
# holds finished runs folded in by housekeeping (``runs.counted`` = 1), and
# ``transition_totals`` the transitions that retention deleted, so every counter
# /metrics exports keeps growing while the rows behind it are pruned.
MIGRATIONS[5] = (
    """CREATE TABLE pair_counts (
        connection_id TEXT NOT NULL,
        entity_type TEXT NOT NULL,
        live BIGINT NOT NULL DEFAULT 0,
        deleted BIGINT NOT NULL DEFAULT 0,
        quarantined BIGINT NOT NULL DEFAULT 0,
        pages BIGINT NOT NULL DEFAULT 0,
        written BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (connection_id, entity_type)
    )""",
    # Backfill from the rows already there (SQLite needs the WHERE before ON CONFLICT).
    """INSERT INTO pair_counts (connection_id, entity_type, live, deleted)
        SELECT connection_id, entity_type,
            SUM(CASE WHEN deleted_at IS NULL THEN 1 ELSE 0 END),
            SUM(CASE WHEN deleted_at IS NULL THEN 0 ELSE 1 END)
        FROM records GROUP BY connection_id, entity_type""",
    """INSERT INTO pair_counts (connection_id, entity_type, quarantined)
        SELECT connection_id, entity_type, COUNT(*) FROM quarantine WHERE true
        GROUP BY connection_id, entity_type
        ON CONFLICT (connection_id, entity_type) DO UPDATE SET
            quarantined = excluded.quarantined""",
    """INSERT INTO pair_counts (connection_id, entity_type, pages, written)
        SELECT connection_id, entity_type, SUM(pages), SUM(records) FROM runs
        WHERE connection_id IS NOT NULL AND entity_type IS NOT NULL
        GROUP BY connection_id, entity_type
        ON CONFLICT (connection_id, entity_type) DO UPDATE SET
            pages = excluded.pages, written = excluded.written""",
    "ALTER TABLE runs ADD COLUMN counted INTEGER NOT NULL DEFAULT 0",
    """CREATE TABLE run_totals (
        connection_id TEXT NOT NULL,
        entity_type TEXT NOT NULL,
        status TEXT NOT NULL,
        error_kind TEXT NOT NULL,
        runs BIGINT NOT NULL,
        PRIMARY KEY (connection_id, entity_type, status, error_kind)
    )""",
    """INSERT INTO run_totals (connection_id, entity_type, status, error_kind, runs)
        SELECT COALESCE(connection_id, ''), COALESCE(entity_type, ''), status,
            COALESCE(error_kind, ''), COUNT(*)
        FROM runs WHERE status IN ('succeeded', 'failed', 'skipped', 'rejected')
        GROUP BY COALESCE(connection_id, ''), COALESCE(entity_type, ''), status,
            COALESCE(error_kind, '')""",
    "UPDATE runs SET counted = 1 WHERE status IN ('succeeded', 'failed', 'skipped', 'rejected')",
    "CREATE INDEX runs_uncounted ON runs (status) WHERE counted = 0",
    "CREATE INDEX runs_by_finished ON runs (finished_at)",
    """CREATE TABLE transition_totals (
        connection_id TEXT NOT NULL,
        level TEXT NOT NULL,
        from_state TEXT NOT NULL,
        to_state TEXT NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (connection_id, level, from_state, to_state)
    )""",
    "CREATE INDEX transitions_by_at ON transitions (at)",
    "CREATE INDEX events_by_age ON events (status, created_at)",
    "CREATE INDEX schedule_log_by_at ON schedule_log (at)",
)

# Version 6: webhook secret rotation. While a connection's secret is replaced,
# the previous one (encrypted like the current) signs each delivery too, until
# the instant in ``webhook_secret_previous_until``.
MIGRATIONS[6] = (
    "ALTER TABLE connections ADD COLUMN webhook_secret_previous_ciphertext TEXT",
    "ALTER TABLE connections ADD COLUMN webhook_secret_previous_until TEXT",
)

# Version 7: webhooks the unified API sends (worker/inbound/actions.py). Each event is
# kept by its id before the receiver answers; ``upstream_connection_id`` maps
# the upstream's id of a connection (its status endpoint's ``id``) to ours;
# ``upstream_aspects`` holds, per connection and aspect (auth, availability,
# sync, error), the newest event applied, so an older one arriving late is
# ignored and status can show what the upstream reported.
MIGRATIONS[7] = (
    "ALTER TABLE connections ADD COLUMN upstream_connection_id TEXT",
    "CREATE INDEX connections_by_upstream_id ON connections (upstream_connection_id)",
    """CREATE TABLE upstream_events (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        upstream_connection_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        received_at TEXT NOT NULL,
        body TEXT NOT NULL,
        status TEXT NOT NULL,
        connection_ids TEXT,
        outcome TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        processed_at TEXT
    )""",
    "CREATE INDEX upstream_events_by_status ON upstream_events (status, received_at)",
    "CREATE INDEX upstream_events_by_upstream_id ON upstream_events (upstream_connection_id)",
    """CREATE TABLE upstream_aspects (
        connection_id TEXT NOT NULL,
        aspect TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        created_at TEXT NOT NULL,
        applied_at TEXT NOT NULL,
        kind TEXT,
        entity_types TEXT,
        message TEXT,
        PRIMARY KEY (connection_id, aspect)
    )""",
)

# Version 8: what a run changed, deletions found by a complete read, and the
# opt-in webhook events. ``records.seen_by_run`` is the last run that read the
# key; a successful full run marks every live key it did not read and that
# nobody wrote after it began as deleted (``deleted_by`` 'reconciliation';
# 'upstream' when the record itself carried deletedAt). ``runs`` counts keys
# created, updated and deleted (by deletedAt) and those it marked deleted.
MIGRATIONS[8] = (
    "ALTER TABLE records ADD COLUMN deleted_by TEXT",
    "ALTER TABLE records ADD COLUMN seen_by_run TEXT",
    "UPDATE records SET deleted_by = 'upstream' WHERE deleted_at IS NOT NULL",
    "ALTER TABLE runs ADD COLUMN created INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE runs ADD COLUMN updated INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE runs ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE runs ADD COLUMN reconciled INTEGER NOT NULL DEFAULT 0",
    # Comma-separated opt-in event types (sync.completed, sync.failed); NULL: none.
    "ALTER TABLE connections ADD COLUMN webhook_events TEXT",
    # Seconds between periodic reconciliations (full reads); NULL: the default.
    "ALTER TABLE connections ADD COLUMN reconcile_interval_s INTEGER",
    # Per pair, kept with the counters (never a scan of records, and safe from
    # the retention that prunes old runs): keys deleted by reconciliation now,
    # and when the last successful full read ended.
    "ALTER TABLE pair_counts ADD COLUMN reconciled BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE pair_counts ADD COLUMN reconciled_at TEXT",
)

# Version 9: each pair's latest run (not skipped) and when its latest successful
# run finished, kept in ``pair_counts`` whenever a run of the pair is recorded,
# finished or skipped, so status, /api/status and /metrics read one row per pair
# instead of looking the run history up pair by pair.
_LATEST = """(SELECT x.{column} FROM runs x WHERE x.connection_id = pair_counts.connection_id
    AND x.entity_type = pair_counts.entity_type AND x.status {test}
    ORDER BY x.started_at DESC LIMIT 1)"""
LATEST_RUNS = "last_run_id = {}, last_success_at = {}".format(
    _LATEST.format(column="id", test="<> 'skipped'"),
    _LATEST.format(column="finished_at", test="= 'succeeded'"),
)
MIGRATIONS[9] = (
    "ALTER TABLE pair_counts ADD COLUMN last_run_id TEXT",
    "ALTER TABLE pair_counts ADD COLUMN last_success_at TEXT",
    """INSERT INTO pair_counts (connection_id, entity_type)
        SELECT DISTINCT connection_id, entity_type FROM runs
        WHERE connection_id IS NOT NULL AND entity_type IS NOT NULL
        ON CONFLICT (connection_id, entity_type) DO NOTHING""",
    f"UPDATE pair_counts SET {LATEST_RUNS}",
)

# Version 10: a full read proves it is complete before it marks anything
# deleted (docs/design.md, "Deletions"). ``runs`` keeps the read's evidence:
# the list's ``meta.total`` at its first page, records read without a usable
# key, pages cut short, and the verdict in words. A deletion of too large a
# share of a pair is held per key in ``held_deletions`` until a later complete
# read confirms it or an operator decides; ``pair_counts`` carries the held
# count and the last verdict for status, the dashboard and /metrics. A
# connection may override the guard's share and floor.
MIGRATIONS[10] = (
    "ALTER TABLE runs ADD COLUMN listed_total BIGINT",
    "ALTER TABLE runs ADD COLUMN keyless INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE runs ADD COLUMN short_pages INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE runs ADD COLUMN reconcile_note TEXT",
    "ALTER TABLE runs ADD COLUMN held INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE pair_counts ADD COLUMN held BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE pair_counts ADD COLUMN held_since TEXT",
    "ALTER TABLE pair_counts ADD COLUMN reconcile_note TEXT",
    "ALTER TABLE connections ADD COLUMN deletion_guard_percent REAL",
    "ALTER TABLE connections ADD COLUMN deletion_guard_min INTEGER",
    """CREATE TABLE held_deletions (
        connection_id TEXT NOT NULL,
        entity_type TEXT NOT NULL,
        key TEXT NOT NULL,
        held_at TEXT NOT NULL,
        run_id TEXT NOT NULL,
        last_seen_run TEXT,
        PRIMARY KEY (connection_id, entity_type, key)
    )""",
)

# Version 12: the outbox's delivery fence and the retry clock of a requeued event.
# ``notify_fences`` holds one number per connection, raised by every notifier
# that takes the connection's delivery lock; an outcome is recorded only while
# the number is still the one its notifier took (worker/outbox/notifier.py), so
# a notifier whose lock expired can no longer mark anything. ``requeued_at``:
# when an operator queued the event again (`events redeliver`); its retry
# clock starts there instead of at ``created_at``.
MIGRATIONS[12] = (
    """CREATE TABLE notify_fences (
        connection_id TEXT PRIMARY KEY,
        fence BIGINT NOT NULL
    )""",
    "ALTER TABLE events ADD COLUMN requeued_at TEXT",
)

# Version 13: the upstream's id of a connection is unique per unified API, not
# globally (worker/store/upstream_ids.py). ``upstream_base`` is the normalised
# base URL whose status endpoint reported the id; an event the receiver takes
# from that API applies only to connections mapped at that base. A second
# connection reporting an id another holds at the same base is refused:
# ``upstream_id_refused`` keeps what it reported, for status. Ids learned before
# this version carry no base and are forgotten: each connection's next
# preflight learns its id again, and events kept meanwhile wait as unmapped.
MIGRATIONS[13] = (
    "ALTER TABLE connections ADD COLUMN upstream_base TEXT",
    "ALTER TABLE connections ADD COLUMN upstream_id_refused TEXT",
    "UPDATE connections SET upstream_connection_id = NULL",
    "DROP INDEX connections_by_upstream_id",
    "CREATE UNIQUE INDEX connections_by_upstream_id "
    "ON connections (upstream_base, upstream_connection_id)",
)

SCHEMA_VERSION = max(MIGRATIONS)
