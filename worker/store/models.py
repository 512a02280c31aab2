"""Plain values that go in and out of the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    """Where a run of one (connection, entity type) stands."""

    QUEUED = "queued"  # sent by a fan-out; no task of it has started yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # another run of the same pair held the lease
    REJECTED = "rejected"  # the job payload was invalid; nothing ran
    DEFERRED = "deferred"  # parked behind a breaker or pause; resumes by itself


TERMINAL_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.REJECTED}
)


@dataclass(frozen=True)
class Connection:
    """One customer system behind the unified API."""

    id: str
    name: str
    entity_types: tuple[str, ...]
    upstream_url: str | None = None  # None: the ENTITY_SYNC_UPSTREAM_URL default
    webhook_url: str | None = None
    token_ciphertext: str | None = field(default=None, repr=False)
    token_version: int = 0
    created_at: str = ""
    updated_at: str = ""
    # Overrides of the ENTITY_SYNC_RATE_* / MAX_CONCURRENCY defaults; None: default.
    rate_per_second: float | None = None
    rate_burst: int | None = None
    max_concurrency: int | None = None
    webhook_secret_ciphertext: str | None = field(default=None, repr=False)
    sync_interval_s: int | None = None  # None: ENTITY_SYNC_SYNC_INTERVAL_SECONDS
    # The secret replaced last, still signing next to the current one until then.
    webhook_secret_previous_ciphertext: str | None = field(default=None, repr=False)
    webhook_secret_previous_until: str | None = None

    def sync_interval(self, default_s: float) -> float:
        """How often it syncs: its own interval where it has a usable one, else the default.

        A stored interval out of range (zero, negative: the CLI refuses one, but
        a row may hold it) would put the connection in a slot it can never leave.
        """
        from worker.operator_input import usable_interval

        return float(usable_interval(self.sync_interval_s) or default_s)


# Not frozen: a frozen dataclass sets each field through object.__setattr__,
# ~0.5 µs per record on the hot path (BENCHMARKS.md "Where the worker's time goes").
@dataclass(slots=True)
class RecordRow:
    """One upstream record ready to upsert (treat as read-only)."""

    key: str
    data_json: str  # the record as received, unknown fields included (see ``raw``)
    updated_at: str  # canonical UTC text (worker.timeutil)
    deleted_at: str | None
    # The exact text as received where data_json had to escape it (NUL, NaN...;
    # docs/records.md), else None: data_json is then the record as received.
    raw: str | None = None


@dataclass(frozen=True)
class QuarantinedRecord:
    """A record that could not be stored, with why."""

    reason: str
    raw_json: str
    key: str | None = None


@dataclass(frozen=True)
class PageCommit:
    """Everything one fetched page changes, committed in one transaction."""

    connection_id: str
    entity_type: str
    run_id: str
    records: tuple[RecordRow, ...]
    quarantined: tuple[QuarantinedRecord, ...]
    cursor: str | None  # the next run's inclusive lower bound on updatedAt
    # A full read's evidence of completeness (worker/sync/full_read.py):
    listed_total: int | None = None  # meta.total of the read's first, unfiltered page
    short: bool = False  # the page ended the read with fewer records than meta promised


@dataclass(frozen=True)
class DeletionGuard:
    """How many deletions one complete read may apply before they are held instead."""

    max_percent: float = 10.0  # held when more than this share of the live records ...
    min_records: int = 20  # ... and more than this many would go (or every one)
    confirm_after_s: float = 3600.0  # a later complete read this much later applies a hold

    def holds(self, fresh: int, missing: int, live: int) -> bool:
        """Whether ``fresh`` new deletions (``missing`` in all, of ``live``) must wait."""
        if live > 0 and missing >= live:
            return True  # the whole pair would go: never on one read's word
        return fresh > self.min_records and fresh * 100 > self.max_percent * live

    def describe(self) -> str:
        return f"at most {self.max_percent:g}% or {self.min_records} records"


@dataclass(frozen=True)
class FullReadEvidence:
    """What a full run's own pages showed (the store kept it page by page)."""

    listed_total: int | None  # meta.total of the read's first, unfiltered page
    keys_read: int  # distinct keys read: stored, or quarantined with a key
    keyless: int  # records read without a usable key
    short_pages: int  # pages that ended the read short of what their meta promised


@dataclass(frozen=True)
class FullReadVerdict:
    """Whether a successful full run proved it read the whole list, and its guard."""

    incomplete: str | None  # why the read proves nothing; None: it is complete
    guard: DeletionGuard = DeletionGuard()


@dataclass(frozen=True)
class Run:
    """One run of one (connection, entity type), possibly over several tasks."""

    id: str
    connection_id: str | None
    entity_type: str | None
    status: str
    started_at: str
    request_id: str | None = None
    trigger: str = "manual"
    full: bool = False
    finished_at: str | None = None
    pages: int = 0
    records: int = 0
    quarantined: int = 0
    tasks: int = 0
    error_kind: str | None = None
    error_message: str | None = None
    coalesced_into: str | None = None
    heartbeat_at: str | None = None  # when it was queued, or its last task start or page
    queue: str | None = None  # the broker queue its tasks go to
    recoveries: int = 0  # times re-sent after its task was lost


@dataclass(frozen=True)
class EntityStatus:
    """What `entity-sync status` shows for one (connection, entity type)."""

    connection_id: str
    entity_type: str
    records: int
    deleted: int
    quarantined: int
    cursor: str | None
    last_run: Run | None
    last_success_at: str | None
    # Of ``deleted``: keys a complete read no longer found; when one last succeeded.
    deleted_by_reconciliation: int = 0
    last_reconciled_at: str | None = None
    # Deletions a complete read found but holds (worker/store/held_deletions.py),
    # and the last full read's verdict when it marked nothing or held some.
    held_deletions: int = 0
    reconcile_note: str | None = None


@dataclass(frozen=True)
class StoredRecord:
    """A record as the store holds it (for status, tests and consumers)."""

    key: str
    data: dict[str, Any]
    updated_at: str
    deleted_at: str | None
    synced_at: str
    raw: str | None = None  # the exact text where ``data`` holds an escaped form


@dataclass(frozen=True)
class ParkedJob:
    """A sync job waiting behind a breaker or pause; one per pair at most."""

    connection_id: str
    entity_type: str
    run_id: str
    due_at: str
    reason: str
    payload_json: str  # the sync_entity payload to send when it is due
    parked_at: str = ""
    times_parked: int = 1


@dataclass(frozen=True)
class TransitionRecord:
    """A breaker state change of a connection or one of its entity types."""

    connection_id: str
    entity_type: str | None
    from_state: str
    to_state: str
    reason: str
    until_at: str | None
    at: str
    id: int = 0
