"""The dashboard's grid: every (connection, entity type) with its state and freshness.

The store says what was synced and when; the breakers in Redis say what may
run now (the same join as ``entity-sync status``). Freshness lag is the time
since the pair's last successful run finished, or since the connection was
registered when it never succeeded; a pair is *stale* once its lag passes
``STALE_AFTER_INTERVALS`` of its connection's sync interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from worker.celeryapp.beat import beat_state
from worker.entities import ALL_ENTITY_TYPES
from worker.ops.status import BreakerViews, Health, upstream_reports
from worker.resilience.breaker import Breaker
from worker.settings import get_settings
from worker.store import ParkedJob, SqlStore
from worker.store.pair_status import PairRow
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


# Built once per pair on every scrape (8,000 at 1,000 connections): slots and no
# frozen __setattr__, five times quicker to make; nothing changes one after it is built.
@dataclass(slots=True)
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
    held_deletions: int = 0  # found by a complete read, held for confirmation
    reconcile_note: str | None = None  # the last full read's verdict, when not plain


@dataclass(frozen=True)
class ConnectionRow:
    """One row of the grid: a connection and a cell per entity type it syncs."""

    id: str
    name: str
    interval_s: float
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class LevelWindow:
    """Requests one connection's breaker saw in its failure-rate window (the last minute)."""

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
    # Parked work that waits for a celery beat that is not running (worker/celeryapp/beat.py).
    beat_notice: str | None = None

    def cells(self) -> list[Cell]:
        """Every cell, row by row."""
        return [cell for row in self.connections for cell in row.cells]

    def held_notice(self) -> str | None:
        """The banner while deletions wait for a person or a confirming read."""
        held = [cell for cell in self.cells() if cell.held_deletions]
        if not held:
            return None
        keys = sum(cell.held_deletions for cell in held)
        return (
            f"{keys} deletions held on {len(held)} pair(s): a complete read found more "
            "records gone than the guard applies on one read's word. `entity-sync deletions` "
            "lists them; approve or discard after checking the source."
        )

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
        # Each connection's categories once: ranking and every filter's count read them.
        categories = {row.id: {category(cell) for cell in row.cells} for row in self.connections}
        ranks = {
            cid: min((CATEGORIES.index(c) for c in found), default=len(CATEGORIES))
            for cid, found in categories.items()
        }
        ranked = sorted(self.connections, key=lambda row: (ranks[row.id], row.id))
        body: dict[str, Any] = {
            "generated_at": self.generated_at,
            "redis_ok": self.redis_ok,
            "default_interval_s": self.default_interval_s,
            "stale_after_intervals": self.stale_after_intervals,
            "entity_types": list(self.entity_types),
            "counts": counts,
            "beat_notice": self.beat_notice,
            "held_notice": self.held_notice(),
        }
        if view is None:
            body["connections"] = [_row_json(row) for row in ranked]
            return body
        matched = [row for row in ranked if view.matches(row, categories[row.id])]
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
            name: sum(View(state=name).matches(row, categories[row.id]) for row in ranked)
            for name in FILTERS
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

    def matches(self, row: ConnectionRow, categories: set[str] | None = None) -> bool:
        """Whether the view shows ``row`` (``categories``: its cells', when known)."""
        if self.q:
            needle = self.q.casefold()
            if needle not in row.id.casefold() and needle not in row.name.casefold():
                return False
        if self.state == "all":
            return True
        if categories is None:
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
    # Not asdict(): the same fields without its deep copy of every value.
    cells = []
    for cell in row.cells:
        body = {name: getattr(cell, name) for name in _CELL_FIELDS}
        body["category"] = category(cell)
        cells.append(body)
    return {
        "id": row.id,
        "name": row.name,
        "interval_s": row.interval_s,
        "cells": cells,
        "category": CATEGORIES[min(rank(row), len(CATEGORIES) - 1)],
    }


_CELL_FIELDS = tuple(f.name for f in fields(Cell))


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
    unix_now = moment.timestamp()
    connections = store.list_connections()
    # The breakers are read on a thread of their own while the store answers:
    # both mostly wait (Redis runs the scripts, the database the query).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="breakers") as pool:
        reading = pool.submit(BreakerViews.read, breaker, [c.id for c in connections])
        parked_jobs = store.parked_jobs()
        pair_rows = store.pair_rows(connections)
        breakers = reading.result()
    views, redis_ok = breakers.views, breakers.reachable
    parked = {(job.connection_id, job.entity_type): job for job in parked_jobs}
    by_id = {c.id: c for c in connections}
    intervals = {c.id: c.sync_interval(default_interval_s) for c in connections}
    health = breakers.health()
    by_connection: dict[str, list[Cell]] = {c.id: [] for c in connections}
    reports = upstream_reports(store)
    for row in pair_rows:
        cid = row[0]
        by_connection[cid].append(
            _cell(
                row,
                health(cid, row[1]),
                by_id[cid].created_at,
                unix_now,
                intervals[cid],
                parked.get((cid, row[1])),
                reports(cid, row[1]),
            )
        )
    rows = tuple(
        ConnectionRow(
            id=c.id,
            name=c.name,
            interval_s=intervals[c.id],
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
            LevelWindow(cid, "connection", view.connection.calls, view.connection.failures)
            for cid, view in views.items()
        ),
        beat_notice=_beat_notice(breaker, parked_jobs) if redis_ok else None,
    )


def _beat_notice(breaker: Breaker | None, parked: Sequence[ParkedJob]) -> str | None:
    if breaker is None or not parked:
        return None
    return beat_state(breaker.redis, get_settings(), parked).notice()


def _cell(
    row: PairRow,
    health: Health,
    created_at: str | None,
    moment: float,
    interval: float,
    job: ParkedJob | None,
    upstream: str | None,
) -> Cell:
    last_success = row[5]
    since = last_success or created_at or None
    lag = max(0.0, moment - _epoch(since)) if since else None
    failed = row[9] == "failed"
    return Cell(
        row[0],
        row[1],
        health.state,
        lag is not None and lag > STALE_AFTER_INTERVALS * interval,
        health.until,
        health.reason or None,
        last_success,
        round(lag, 1) if lag is not None else None,
        last_success is None,
        row[9],
        row[13] if failed else None,
        row[12] if failed else None,
        row[2],
        row[3],
        row[4],
        health.recent_failures,
        job.due_at if job else None,
        job.reason if job else None,
        upstream,
        int(row[14] or 0),
        row[15],
    )


def _epoch(text: str) -> float:
    """Unix seconds of an instant; quick for the store's canonical ``...SS.ffffffZ``.

    Once per pair on every scrape: the day's midnight is looked up (parsed once
    per day seen), the time of day added from the digits.
    """
    if len(text) == 27 and text[26] == "Z" and text[10] == "T" and text[19] == ".":
        day = _MIDNIGHTS.get(text[:10])
        if day is None:
            if len(_MIDNIGHTS) > 10_000:
                _MIDNIGHTS.clear()
            day = parse_instant(text[:10]).timestamp()
            _MIDNIGHTS[text[:10]] = day
        try:
            return day + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + float(text[17:26])
        except ValueError:
            pass
    return parse_instant(text).timestamp()


_MIDNIGHTS: dict[str, float] = {}


def _entity_columns(rows: Sequence[ConnectionRow]) -> tuple[str, ...]:
    """The entity types any connection syncs, in the API's order."""
    used = {cell.entity_type for row in rows for cell in row.cells}
    known = [t.value for t in ALL_ENTITY_TYPES if t.value in used]
    return tuple(known + sorted(used - set(known)))
