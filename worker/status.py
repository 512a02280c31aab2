"""What `entity-sync status` shows: per connection and entity type, as rows or a table."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from worker.store import EntityStatus, Run, RunStatus, SqlStore
from worker.store.models import TERMINAL_STATUSES


@dataclass(frozen=True)
class StatusRow:
    """One line of the status table."""

    connection_id: str
    entity_type: str
    records: int
    deleted: int
    quarantined: int
    cursor: str | None
    last_run_status: str | None
    last_run_started_at: str | None
    last_run_pages: int | None
    last_success_at: str | None
    last_error: str | None

    @classmethod
    def of(cls, status: EntityStatus) -> StatusRow:
        run = status.last_run
        return cls(
            connection_id=status.connection_id,
            entity_type=status.entity_type,
            records=status.records,
            deleted=status.deleted,
            quarantined=status.quarantined,
            cursor=status.cursor,
            last_run_status=run.status if run else None,
            last_run_started_at=run.started_at if run else None,
            last_run_pages=run.pages if run else None,
            last_success_at=status.last_success_at,
            last_error=(run.error_message if run and run.status == RunStatus.FAILED else None),
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def status_rows(store: SqlStore, connection_id: str | None = None) -> list[StatusRow]:
    """Status of every (connection, entity type), or of one connection."""
    return [StatusRow.of(s) for s in store.entity_statuses(connection_id)]


_COLUMNS = (
    ("CONNECTION", "connection_id"),
    ("ENTITY", "entity_type"),
    ("RECORDS", "records"),
    ("DELETED", "deleted"),
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
        if field == "cursor":
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
