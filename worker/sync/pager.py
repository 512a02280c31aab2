"""Walk one entity type's list without skipping a record, as a pure state machine.

Plain page numbers skip records when the source changes mid-run: an update
moves a record to the end of the ascending order and shifts every later page
by one. The Pager never relies on page numbers across a changing list:

* **Scan.** Always ask for page 1 of ``updatedAt >= cursor``, ascending. A full
  page whose newest record is at ``hi`` holds every record below ``hi``, so the
  cursor moves to ``hi`` (inclusive: records at ``hi`` are read again, and the
  upsert makes that harmless). A page that is not full ends the run.
* **Ties.** A full page whose records all share one ``updatedAt`` T (a bulk
  import bigger than a page) cannot move the cursor. The Pager then reads the
  window ``[T, T + 1µs)`` by page numbers, in passes, until one pass sees a
  constant ``meta.total`` and every key it promises. Records only leave such a
  window (an update moves them later, where the scan will meet them again), so
  a stable pass is complete. Keys seen in earlier passes count towards the
  total only while it has not changed since: once a key has left, counting it
  would hide a key never read. Ties in a new order on every request need more
  passes, never a skip; after ``max_tie_passes`` the run fails and the cursor
  stays at T, losing nothing.
* **Bounded.** ``meta`` is checked before it steers anything (a negative
  ``per_page`` would make every page "full"), a pass reads at most the pages
  ``meta.total`` allows, and a page that repeats the previous one (an upstream
  ignoring ``page``) ends the run as bad data instead of paging for ever.
* **Settling.** The saved cursor passes T only once T is ``settle_s`` older
  than the upstream's clock (its Date header), so a writer still stamping T
  cannot add to a group already left behind. Until then the run reads on past
  T but keeps its checkpoint pinned at T, and the next run reads the group
  again.
* **Ends.** A run reads what the list held when it began, not every change
  made while it reads: its horizon is the upstream's clock at its first page
  plus ``horizon_margin_s``, and a full page reaching past the horizon ends
  the run. The cursor stays at that page's newest record, so what changed
  later is the next run's first page; without this, a source that changes
  faster than a worker reads keeps one run going for ever. A full run
  (``horizon_margin_s=None``) has no horizon: it must read every key to the
  list's end, since it marks the keys it did not read as deleted.

The cursor is checkpointed with each page's records in one transaction, so a
crash anywhere repeats work and never loses any.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta

from worker.errors import BadResponse
from worker.store import RecordRow
from worker.timeutil import after, canonical, parse_instant
from worker.upstream.client import Page, PageQuery


@dataclass
class _TieScan:
    """Progress through one group of records sharing ``at`` as updatedAt."""

    at: str
    page: int = 1
    passes: int = 0
    total: int | None = None
    stable: bool = True
    seen: set[str] = field(default_factory=set)
    last_keys: tuple[str, ...] = ()  # the previous page of this pass, to spot a repeat
    max_total: int = 0  # the largest total announced in this pass


def _check_meta(page: Page) -> None:
    """Refuse a ``meta`` that would steer the pager wrong (a page holds 1..100 records)."""
    meta = page.meta
    if meta.per_page is not None and meta.per_page < 1:
        raise BadResponse(f"meta.per_page is {meta.per_page}: not a page size")
    for name in ("total", "last_page", "current_page"):
        value = getattr(meta, name)
        if value is not None and value < 0:
            raise BadResponse(f"meta.{name} is {value}: not a count")


def _promised_more(page: Page) -> bool:
    """Whether a page that ends the scan (page 1 of what is left) holds less than its
    own ``meta`` says is left: an answer cut short, not the list's end."""
    meta = page.meta
    if meta.total is not None and meta.total > len(page.records):
        return True
    return meta.last_page is not None and (meta.current_page or 1) < meta.last_page


class Pager:
    """Decides the next page request and the cursor after each page."""

    def __init__(
        self,
        *,
        cursor: str | None,
        position: str | None = None,
        per_page: int,
        settle_s: float,
        max_tie_passes: int,
        horizon: str | None = None,
        horizon_margin_s: float | None = None,
    ) -> None:
        self.done = False
        # Set from the first page of the run; a continuing slice brings it along.
        self._horizon = horizon
        self._horizon_margin = (
            None if horizon_margin_s is None else timedelta(seconds=horizon_margin_s)
        )
        # ``position`` is where an earlier slice of the same run stopped
        # reading; the saved ``cursor`` may lag behind it, pinned at a tie group.
        self._position = position or cursor  # where reading goes on from
        # An unsettled tie group that the checkpoint must not pass.
        self._pinned: str | None = cursor if position and position != cursor else None
        self._per_page = per_page
        self._settle = timedelta(seconds=settle_s)
        self._max_tie_passes = max_tie_passes
        self._tie: _TieScan | None = None
        # What the last page showed of the list as a whole (worker/sync/full_read.py):
        self.listed_total: int | None = None  # meta.total, when it was the unfiltered first page
        self.short = False  # it ended the scan with fewer records than its meta promised

    @property
    def cursor(self) -> str | None:
        """The checkpoint to save with the page: where the next run starts."""
        return self._pinned if self._pinned is not None else self._position

    @property
    def position(self) -> str | None:
        """Where reading goes on from: the next slice of this run starts here."""
        return self._position

    @property
    def horizon(self) -> str | None:
        """The newest updatedAt this run must read; later changes are the next run's."""
        return self._horizon

    @property
    def in_tie_scan(self) -> bool:
        """Whether a group sharing one updatedAt is being read (progress in memory)."""
        return self._tie is not None

    def next_query(self) -> PageQuery:
        """The request to send next (only while not ``done``)."""
        if self._tie is not None:
            return PageQuery(
                page=self._tie.page,
                per_page=self._per_page,
                since=self._tie.at,
                before=after(self._tie.at),
            )
        return PageQuery(page=1, per_page=self._per_page, since=self._position)

    def advance(self, page: Page, stored: list[RecordRow]) -> None:
        """Take in one page (and its storable records); move the cursor."""
        _check_meta(page)
        first = self._position is None and self._tie is None
        self.listed_total = page.meta.total if first else None
        self.short = False
        if self._horizon is None and self._horizon_margin is not None:
            self._horizon = canonical(page.server_time + self._horizon_margin)
        full = len(page.records) >= min(self._per_page, page.meta.per_page or self._per_page)
        if self._tie is not None:
            self._advance_tie(self._tie, page, stored, full)
        else:
            self._advance_scan(page, stored, full)

    def _advance_scan(self, page: Page, stored: list[RecordRow], full: bool) -> None:
        stamps = [record.updated_at for record in stored]
        position = self._position
        if not full:
            if stamps and (position is None or max(stamps) > position):
                self._position = max(stamps)
            self.done = True
            self.short = _promised_more(page)
            return
        if not stamps:
            raise BadResponse("a full page without one valid updatedAt: cannot move on")
        low, high = min(stamps), max(stamps)
        if position is not None and (high < position or (high > low and high == position)):
            raise BadResponse("the upstream ignored filter[updatedAt:gteq]")
        self._position = high
        if self._horizon is not None and high > self._horizon:
            # Everything up to ``high`` is read, and with it the list as it was
            # when the run began: what changed since is the next run's.
            self.done = True
            return
        if high == low:
            # The whole page shares one updatedAt: read that group by page numbers.
            self._tie = _TieScan(at=high)

    def _advance_tie(self, tie: _TieScan, page: Page, stored: list[RecordRow], full: bool) -> None:
        total = page.meta.total
        if tie.page == 1:
            if tie.passes and total != tie.total:
                # The group changed since the last pass: a key seen then may have
                # left, so counting it would stand in for a key not read yet.
                tie.seen.clear()
            tie.total, tie.stable, tie.max_total = total, True, 0
        elif total != tie.total:
            tie.stable = False
        keys = tuple(record.key for record in stored)
        repeated = bool(keys) and tie.seen.issuperset(keys)
        if tie.page > 1 and total is None and keys == tie.last_keys and keys:
            # No total to bound the pass by: the same page twice is the only sign.
            raise BadResponse(
                f"page {tie.page} of the records sharing updatedAt {tie.at} repeats page "
                f"{tie.page - 1}: the upstream ignores the page parameter"
            )
        tie.last_keys = keys
        tie.max_total = max(tie.max_total, total or 0)
        tie.seen.update(keys)
        last_page = page.meta.last_page
        if full and (last_page is None or tie.page < last_page):
            # An honest full page N means at least N pages' worth of records.
            size = min(self._per_page, page.meta.per_page or self._per_page)
            if total is not None and tie.page > math.ceil(tie.max_total / size):
                why = (
                    "it repeats records already read: the upstream ignores the page parameter"
                    if repeated
                    else "the upstream's paging does not end"
                )
                raise BadResponse(
                    f"meta.total says {tie.max_total} records share updatedAt {tie.at}, "
                    f"yet page {tie.page} of them is full and {why}"
                )
            tie.page += 1
            return
        # End of a pass over the group.
        tie.passes += 1
        complete = tie.stable and (tie.total is None or len(tie.seen) >= tie.total)
        if not complete:
            if tie.passes >= self._max_tie_passes:
                raise BadResponse(
                    f"{tie.total} records share updatedAt {tie.at} and could not be read "
                    f"completely in {tie.passes} passes"
                )
            if not tie.stable:
                tie.seen.clear()  # the group changed: count a fresh pass from scratch
            tie.page = 1
            return
        self._tie = None
        self._position = after(tie.at)
        if self._pinned is None and parse_instant(tie.at) + self._settle > page.server_time:
            # Writers may still stamp T: read on, but the next run starts at T again.
            self._pinned = tie.at
