"""The dashboard's grid: every (connection, entity type) with its state and freshness.

The store says what was synced and when; the breakers in Redis say what may
run now (the same join as ``entity-sync status``). Freshness lag is the time
since the pair's last successful run finished, or since the connection was
registered when it never succeeded; a pair is *stale* once its lag passes
``STALE_AFTER_INTERVALS`` of its connection's sync interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from worker.beat import beat_state
from worker.breaker import Breaker, BreakerView
from worker.entities import ALL_ENTITY_TYPES
from worker.errors import EntitySyncError
from worker.settings import get_settings
from worker.status import UNKNOWN, Health, StatusRow, health_of, upstream_reports
from worker.store import Connection, ParkedJob, SqlStore
from worker.timeutil import canonical, parse_instant

STALE_AFTER_INTERVALS = 3
STATES = ("healthy", "paused", "open", "half-open", "halted", "blocked", "unknown")
# What an operator looks at first: a cell's category, worst first. "failing" is a
# pair whose breaker lets it run but whose last run failed; "stale" one that
# runs but has not succeeded for three intervals.
CATEGORIES = (
    "halted",
    "open",
    "half-open",
    "blocked",
    "paused",
    "failing",
    "stale",
    "unknown",
    "healthy",
)
FILTERS = ("all", "problems", *CATEGORIES)
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 500


@dataclass(frozen=True)
class Cell:
    """One (connection, entity type) square of the grid."""

    connection_id: str
    entity_type: str
    state: str  # one of STATES
    stale: bool
    until: str | None  # when a pause or open breaker is due to end
    reason: str | None
    last_success_at: str | None
    lag_s: float | None  # None only when the connection's creation time is unknown
    never_synced: bool
    last_run_status: str | None
    last_error: str | None
    last_error_kind: str | None
    records: int
    deleted: int
    quarantined: int
    recent_failures: int
    parked_until: str | None
    parked_reason: str | None
    # What the unified API's webhooks last reported as wrong (sync.failed, connection.error).
    upstream_report: str | None = None


@dataclass(frozen=True)
class ConnectionRow:
    """One row of the grid: a connection and a cell per entity type it syncs."""

    id: str
    name: str
    interval_s: float
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class LevelWindow:
    """Requests one breaker level saw in its failure-rate window (the last minute)."""

    connection_id: str
    level: str  # "connection" or an entity type
    calls: int
    failures: int


@dataclass(frozen=True)
class Grid:
    """Everything the page, the JSON and the freshness metrics show."""

    generated_at: str
    redis_ok: bool
    default_interval_s: float
    stale_after_intervals: int
    entity_types: tuple[str, ...]
    connections: tuple[ConnectionRow, ...]
    windows: tuple[LevelWindow, ...]
    # Parked work that waits for a celery beat that is not running (worker/beat.py).
    beat_notice: str | None = None

    def cells(self) -> list[Cell]:
        """Every cell, row by row."""
        return [cell for row in self.connections for cell in row.cells]

    def as_json(self, view: View | None = None) -> dict[str, Any]:
        """The /api/status body: the grid plus counts per state (breaker windows left out).

        Connections come problems first (``CATEGORIES`` order of their worst
        cell, then by id). With a view, only the connections it matches, one
        page of them, plus how many connections each filter would show.
        """
        counts = dict.fromkeys(STATES, 0) | {"stale": 0}
        for cell in self.cells():
            counts[cell.state] += 1
            counts["stale"] += cell.stale
        ranked = sorted(self.connections, key=lambda row: (rank(row), row.id))
        body: dict[str, Any] = {
            "generated_at": self.generated_at,
            "redis_ok": self.redis_ok,
            "default_interval_s": self.default_interval_s,
            "stale_after_intervals": self.stale_after_intervals,
            "entity_types": list(self.entity_types),
            "counts": counts,
            "beat_notice": self.beat_notice,
        }
        if view is None:
            body["connections"] = [_row_json(row) for row in ranked]
            return body
        matched = [row for row in ranked if view.matches(row)]
        pages = max(1, -(-len(matched) // view.per_page))
        page = min(max(view.page, 1), pages)
        start = (page - 1) * view.per_page
        body["connections"] = [_row_json(row) for row in matched[start : start + view.per_page]]
        body["view"] = {
            "state": view.state,
            "q": view.q,
            "page": page,
            "pages": pages,
            "per_page": view.per_page,
            "matched": len(matched),
            "total": len(ranked),
        }
        body["filters"] = {
            name: sum(View(state=name).matches(row) for row in ranked) for name in FILTERS
        }
        return body


@dataclass(frozen=True)
class View:
    """Which connections the page shows: a state filter, a search, a page."""

    state: str = "all"  # one of FILTERS
    q: str = ""  # part of a connection's id or name, any case
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE

    @classmethod
    def parse(cls, query: dict[str, list[str]]) -> View | None:
        """From a query string (None: no view asked for, the whole grid)."""
        if not query:
            return None

        def one(name: str, default: str) -> str:
            return (query.get(name) or [default])[0]

        state = one("state", "all")
        return cls(
            state=state if state in FILTERS else "all",
            q=one("q", "").strip()[:200],
            page=_int(one("page", "1"), 1, 1, 1_000_000),
            per_page=_int(
                one("per_page", str(DEFAULT_PER_PAGE)), DEFAULT_PER_PAGE, 1, MAX_PER_PAGE
            ),
        )

    def matches(self, row: ConnectionRow) -> bool:
        if self.q:
            needle = self.q.casefold()
            if needle not in row.id.casefold() and needle not in row.name.casefold():
                return False
        if self.state == "all":
            return True
        categories = {category(cell) for cell in row.cells}
        if self.state == "problems":
            return bool(categories - {"healthy"})
        if self.state == "healthy":
            return categories <= {"healthy"}
        return self.state in categories


def _int(text: str, default: int, low: int, high: int) -> int:
    try:
        return min(max(int(text), low), high)
    except ValueError:
        return default


def category(cell: Cell) -> str:
    """The cell's place in the problems-first order (one of CATEGORIES)."""
    if cell.state in ("halted", "open", "half-open", "blocked", "paused"):
        return cell.state
    if cell.last_run_status == "failed":
        return "failing"
    if cell.stale:
        return "stale"
    return "unknown" if cell.state == "unknown" else "healthy"


def rank(row: ConnectionRow) -> int:
    """A connection's worst category, as an index into CATEGORIES (no cells: healthy)."""
    return min((CATEGORIES.index(category(cell)) for cell in row.cells), default=len(CATEGORIES))


def _row_json(row: ConnectionRow) -> dict[str, Any]:
    body = asdict(row)
    body["category"] = CATEGORIES[min(rank(row), len(CATEGORIES) - 1)]
    for cell, cell_body in zip(row.cells, body["cells"], strict=True):
        cell_body["category"] = category(cell)
    return body


def build_grid(
    store: SqlStore,
    breaker: Breaker | None,
    *,
    default_interval_s: float,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Grid:
    """Read the store and the breakers once and put the grid together.

    With no breaker, or Redis unreachable, every state is ``unknown``; the
    store's half (freshness, last error) is still there.
    """
    moment = now()
    connections = store.list_connections()
    views, redis_ok = _breaker_views(breaker, [c.id for c in connections])
    parked_jobs = store.parked_jobs()
    parked = {(job.connection_id, job.entity_type): job for job in parked_jobs}
    by_id = {c.id: c for c in connections}
    by_connection: dict[str, list[Cell]] = {c.id: [] for c in connections}
    reports = upstream_reports(store)
    for status in store.entity_statuses():
        connection = by_id.get(status.connection_id)
        if connection is None:  # registered after we listed: on the next refresh
            continue
        view = views.get(status.connection_id)
        health = health_of(view)(status.entity_type) if view else UNKNOWN
        row = StatusRow.of(status, health, reports(status.connection_id, status.entity_type))
        job = parked.get((status.connection_id, status.entity_type))
        by_connection[status.connection_id].append(
            _cell(row, health, connection, moment, default_interval_s, job)
        )
    rows = tuple(
        ConnectionRow(
            id=c.id,
            name=c.name,
            interval_s=c.sync_interval(default_interval_s),
            cells=tuple(by_connection[c.id]),
        )
        for c in connections
    )
    return Grid(
        generated_at=canonical(moment),
        redis_ok=redis_ok,
        default_interval_s=default_interval_s,
        stale_after_intervals=STALE_AFTER_INTERVALS,
        entity_types=_entity_columns(rows),
        connections=rows,
        windows=tuple(
            LevelWindow(cid, level.level, level.calls, level.failures)
            for cid, view in views.items()
            for level in (view.connection, *view.entity_types)
        ),
        beat_notice=_beat_notice(breaker, parked_jobs) if redis_ok else None,
    )


def _beat_notice(breaker: Breaker | None, parked: Sequence[ParkedJob]) -> str | None:
    if breaker is None or not parked:
        return None
    return beat_state(breaker.redis, get_settings(), parked).notice()


def _breaker_views(
    breaker: Breaker | None, connection_ids: Sequence[str]
) -> tuple[dict[str, BreakerView], bool]:
    if breaker is None:
        return {}, False
    views = {}
    for connection_id in connection_ids:
        try:
            views[connection_id] = breaker.show(connection_id)
        except EntitySyncError:
            # One timeout is enough to know Redis is away: don't wait once per connection.
            return {}, False
    return views, True


def _cell(
    row: StatusRow,
    health: Health,
    connection: Connection,
    moment: datetime,
    default_interval_s: float,
    job: ParkedJob | None,
) -> Cell:
    since = row.last_success_at or connection.created_at or None
    lag = max(0.0, (moment - parse_instant(since)).total_seconds()) if since else None
    interval = connection.sync_interval(default_interval_s)
    return Cell(
        connection_id=row.connection_id,
        entity_type=row.entity_type,
        state=health.state,
        stale=lag is not None and lag > STALE_AFTER_INTERVALS * interval,
        until=row.state_until,
        reason=row.state_reason or None,
        last_success_at=row.last_success_at,
        lag_s=round(lag, 1) if lag is not None else None,
        never_synced=row.last_success_at is None,
        last_run_status=row.last_run_status,
        last_error=row.last_error,
        last_error_kind=row.last_error_kind,
        records=row.records,
        deleted=row.deleted,
        quarantined=row.quarantined,
        recent_failures=row.recent_failures,
        parked_until=job.due_at if job else None,
        parked_reason=job.reason if job else None,
        upstream_report=row.upstream_report,
    )


def _entity_columns(rows: Sequence[ConnectionRow]) -> tuple[str, ...]:
    """The entity types any connection syncs, in the API's order."""
    used = {cell.entity_type for row in rows for cell in row.cells}
    known = [t.value for t in ALL_ENTITY_TYPES if t.value in used]
    return tuple(known + sorted(used - set(known)))
