"""What `entity-sync status` shows: per connection and entity type, as rows or a table."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from worker.errors import EntitySyncError
from worker.resilience.breaker import Breaker, BreakerView, State
from worker.store import EntityStatus, Run, RunStatus, SqlStore
from worker.store.inbound import UpstreamAspect
from worker.store.models import TERMINAL_STATUSES
from worker.store.pair_status import PairRow
from worker.timeutil import unix_to_instant


@dataclass(frozen=True)
class Health:
    """How one (connection, entity type) stands with the breakers right now."""

    state: str  # a State's label (healthy, open, half-open, halted, blocked), paused, unknown
    until: str | None = None
    reason: str | None = None
    recent_failures: int = 0  # in the breaker's failure-rate window
    consecutive_failures: int = 0


UNKNOWN = Health(state="unknown", reason="Redis unreachable")
_HEALTHY = Health(state=State.CLOSED.label)


def health_of(view: BreakerView) -> Callable[[str], Health]:
    """Each entity type's health; the connection's own state wins where it is worse."""
    conn = view.connection
    paused = view.paused_until is not None and view.paused_until > view.now
    by_entity = {level.level: level for level in view.entity_types}

    def of(entity: str) -> Health:
        level = by_entity.get(entity)
        failures = (level.failures if level else 0) + conn.failures
        consecutive = max(level.consecutive_failures if level else 0, conn.consecutive_failures)
        if conn.state is State.HALTED:
            return Health(State.HALTED.label, None, conn.reason, failures, consecutive)
        if paused:
            until = unix_to_instant(view.paused_until)
            return Health(State.PAUSED.label, until, view.pause_reason, failures, consecutive)
        if conn.state is not State.CLOSED:
            state = conn.state.label
            return Health(state, unix_to_instant(conn.until), conn.reason, failures, consecutive)
        if level is not None and level.state is not State.CLOSED:
            state = level.state.label
            return Health(state, unix_to_instant(level.until), level.reason, failures, consecutive)
        if failures == consecutive == 0:
            return _HEALTHY  # most pairs: one shared answer, not an object each
        return Health(State.CLOSED.label, None, None, failures, consecutive)

    return of


@dataclass(frozen=True)
class BreakerViews:
    """Every connection's breakers, read once, as ``status`` and the dashboard show them."""

    views: dict[str, BreakerView]
    reachable: bool  # False: no breaker, or Redis did not answer

    @classmethod
    def read(cls, breaker: Breaker | None, connection_ids: Sequence[str]) -> BreakerViews:
        """Every connection's breakers in pipelined reads: a few round trips in all."""
        if breaker is None:
            return cls({}, reachable=False)
        try:
            return cls(breaker.show_many(connection_ids), reachable=True)
        except EntitySyncError:
            return cls({}, reachable=False)

    def health(self) -> Callable[[str, str], Health]:
        """(connection, entity type) -> its Health; ``UNKNOWN`` where nothing was read."""
        by_connection = {cid: health_of(view) for cid, view in self.views.items()}

        def of(connection_id: str, entity_type: str) -> Health:
            health = by_connection.get(connection_id)
            return UNKNOWN if health is None else health(entity_type)

        return of


# One per pair of the fleet for `status` (8,000 at 1,000 connections): slots and no
# frozen __setattr__, five times quicker to make.
@dataclass(slots=True)
class StatusRow:
    """One line of the status table."""

    connection_id: str
    entity_type: str
    state: str
    state_until: str | None
    state_reason: str | None
    recent_failures: int
    records: int
    deleted: int
    quarantined: int
    cursor: str | None
    last_run_status: str | None
    last_run_started_at: str | None
    last_run_pages: int | None
    last_success_at: str | None
    last_error: str | None

    last_error_kind: str | None
    deleted_by_reconciliation: int = 0  # of ``deleted``: gone from a complete read
    last_reconciled_at: str | None = None  # end of the last successful full read
    # What the unified API's webhooks last reported as wrong (sync.failed,
    # connection.error) for this connection and entity type, if anything.
    upstream_report: str | None = None
    held_deletions: int = 0  # found by a complete read, held for confirmation
    reconcile_note: str | None = None  # the last full read's verdict, when not plain

    @classmethod
    def of(cls, status: EntityStatus, health: Health, upstream: str | None = None) -> StatusRow:
        run = status.last_run
        return cls(
            connection_id=status.connection_id,
            entity_type=status.entity_type,
            state=health.state,
            state_until=health.until,
            state_reason=health.reason,
            recent_failures=health.recent_failures,
            records=status.records,
            deleted=status.deleted,
            quarantined=status.quarantined,
            cursor=status.cursor,
            last_run_status=run.status if run else None,
            last_run_started_at=run.started_at if run else None,
            last_run_pages=run.pages if run else None,
            last_success_at=status.last_success_at,
            last_error=(run.error_message if run and run.status == RunStatus.FAILED else None),
            last_error_kind=(run.error_kind if run and run.status == RunStatus.FAILED else None),
            deleted_by_reconciliation=status.deleted_by_reconciliation,
            last_reconciled_at=status.last_reconciled_at,
            upstream_report=upstream,
            held_deletions=status.held_deletions,
            reconcile_note=status.reconcile_note,
        )

    @classmethod
    def of_row(cls, row: PairRow, health: Health, upstream: str | None = None) -> StatusRow:
        """From the store's plain row of the pair (``SqlStore.pair_rows``)."""
        failed = row[9] == RunStatus.FAILED
        return cls(
            row[0],
            row[1],
            health.state,
            health.until,
            health.reason,
            health.recent_failures,
            row[2],
            row[3],
            row[4],
            row[6],
            row[9],
            row[10],
            row[11],
            row[5],
            row[13] if failed else None,
            row[12] if failed else None,
            int(row[7] or 0),
            row[8],
            upstream,
            int(row[14] or 0),
            row[15],
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def status_rows(
    store: SqlStore, breaker: Breaker | None, connection_id: str | None = None
) -> list[StatusRow]:
    """Status of every (connection, entity type), or of one connection.

    With no breaker, or Redis unreachable, the state column says ``unknown``:
    the store's half of the picture is still shown.
    """
    connections = (
        [store.get_connection(connection_id)] if connection_id else store.list_connections()
    )
    # The breakers are read on a thread of their own while the store answers.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="breakers") as pool:
        reading = pool.submit(BreakerViews.read, breaker, [c.id for c in connections])
        rows = store.pair_rows(connections, one=connection_id)
        health = reading.result().health()
    reports = upstream_reports(store, connection_id)
    return [StatusRow.of_row(row, health(row[0], row[1]), reports(row[0], row[1])) for row in rows]


# Aspects whose latest event reports a problem (worker/inbound/actions.py).
_PROBLEM_EVENTS = ("sync.failed", "connection.error")


def upstream_reports(
    store: SqlStore, connection_id: str | None = None
) -> Callable[[str, str], str | None]:
    """What the unified API last reported as wrong, per (connection, entity type)."""
    by_connection: dict[str, list[UpstreamAspect]] = {}
    for aspect in store.upstream_aspects(connection_id):
        if aspect.event_type in _PROBLEM_EVENTS:
            by_connection.setdefault(aspect.connection_id, []).append(aspect)

    conflicts = upstream_id_conflicts(store, connection_id)

    def report(connection: str, entity: str) -> str | None:
        texts = [
            f"[{a.kind or 'unclassified'}] {a.event_type} at {a.created_at[:19]}: {a.message}"
            for a in by_connection.get(connection, [])
            if not a.entity_types or entity in a.entity_types.split(",")
        ]
        texts += conflicts.get(connection, [])
        return "; ".join(texts) or None

    return report


def render_full_reads(rows: Sequence[StatusRow]) -> str:
    """Below the status table: full reads that marked nothing or hold deletions, and why."""
    lines = [
        f"  {row.connection_id} {row.entity_type}: {row.reconcile_note}"
        for row in rows
        if row.reconcile_note or row.held_deletions
    ]
    if lines:
        lines.insert(0, "Deletions (complete reads only; `entity-sync deletions` for held ones):")
    return "\n".join(lines)


def upstream_id_conflicts(
    store: SqlStore, connection_id: str | None = None
) -> dict[str, list[str]]:
    """Per connection, the upstream ids it shares with another (worker/store/upstream_ids.py).

    Both sides are told: the connection refused (its webhooks are not
    applied) and the one holding the id (webhooks naming it may be another
    customer's: one of the two tokens is not what it seems).
    """
    texts: dict[str, list[str]] = {}
    for refused in store.upstream_id_refusals():
        if connection_id not in (None, refused.connection_id, refused.holder):
            continue
        if refused.holder is None:
            texts.setdefault(refused.connection_id, []).append(
                f"upstream id {refused.refused_id} at {refused.base_url} was held by another "
                "connection: not mapped until its next preflight"
            )
            continue
        texts.setdefault(refused.connection_id, []).append(
            f"upstream id {refused.refused_id} at {refused.base_url} is mapped to "
            f"{refused.holder}: not mapped here, webhooks for it go to {refused.holder}"
        )
        texts.setdefault(refused.holder, []).append(
            f"{refused.connection_id} reports this connection's upstream id "
            f"{refused.refused_id} too (refused): check both tokens"
        )
    return texts


def render_upstream(store: SqlStore, connection_id: str | None = None) -> str:
    """Below the status table: what the unified API's webhooks reported, and events
    kept for a connection id no registered connection has (yet)."""
    lines = []
    for aspect in store.upstream_aspects(connection_id):
        if aspect.event_type in _PROBLEM_EVENTS:
            where = aspect.entity_types or "connection"
            lines.append(
                f"  {aspect.connection_id} ({where}): [{aspect.kind or 'unclassified'}] "
                f"{aspect.event_type} at {aspect.created_at[:19]}: {aspect.message}"
            )
    if lines:
        lines.insert(0, "Reported by the unified API (webhooks):")
    conflicts = [
        f"  {connection}: {text}"
        for connection, texts in sorted(upstream_id_conflicts(store, connection_id).items())
        for text in texts
    ]
    if conflicts:
        lines.append("Upstream connection ids reported by two connections:")
        lines.extend(conflicts)
    unmapped = store.upstream_events(status="unmapped", limit=1000)
    if unmapped and connection_id is None:
        ids = sorted({e.upstream_connection_id for e in unmapped})
        lines.append(
            f"{len(unmapped)} webhook event(s) kept for unknown upstream connection id(s) "
            f"{', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}: applied once a "
            "connection's preflight reports the id (`entity-sync upstream-events --unmapped`)"
        )
    return "\n".join(lines)


_COLUMNS = (
    ("CONNECTION", "connection_id"),
    ("ENTITY", "entity_type"),
    ("STATE", "state"),
    ("UNTIL", "state_until"),
    ("RECORDS", "records"),
    ("DELETED", "deleted"),
    ("(RECONCILED)", "deleted_by_reconciliation"),
    ("HELD", "held_deletions"),
    ("QUAR.", "quarantined"),
    ("LAST RUN", "last_run_status"),
    ("CURSOR", "cursor"),
    ("LAST ERROR", "last_error"),
)


def render_table(rows: Sequence[StatusRow]) -> str:
    """A plain-text table for a terminal."""

    def cell(row: StatusRow, field: str) -> str:
        value = getattr(row, field)
        if value is None:
            return "-"
        if field in ("cursor", "state_until"):
            return str(value)[:19]
        if field == "last_error":
            return str(value)[:60]
        return str(value)

    table = [[title for title, _ in _COLUMNS]]
    table += [[cell(row, field) for _, field in _COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


def wait_for_request(
    store: SqlStore,
    request_id: str,
    entity_types: Sequence[str],
    *,
    timeout_s: float,
    poll_s: float = 0.25,
) -> list[Run]:
    """Wait until every entity type of a sync request has a finished run.

    A run skipped because another run of the pair was going counts once that
    other run finishes. Returns the deciding run per entity type; raises
    TimeoutError when the deadline passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        runs = store.runs_for_request(request_id)
        rejected = [r for r in runs if r.status == RunStatus.REJECTED]
        if rejected:
            return rejected
        deciding: dict[str, Run] = {}
        for run in runs:
            if run.status == RunStatus.SKIPPED and run.coalesced_into:
                run = store.get_run(run.coalesced_into) or run
            if run.entity_type and run.status in TERMINAL_STATUSES - {RunStatus.SKIPPED}:
                deciding[run.entity_type] = run
        if all(entity in deciding for entity in entity_types):
            return [deciding[entity] for entity in entity_types]
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"sync request {request_id} not finished after {timeout_s:g}s "
                f"({len(deciding)}/{len(entity_types)} entity types done)"
            )
        time.sleep(poll_s)
