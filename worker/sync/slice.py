"""One slice of a run: fetch pages of one entity type and commit each with its cursor.

A slice stops when the list is read to its end, or after a bounded number of
pages or seconds so that no task outlives the broker's visibility timeout;
the caller then continues the run in a new task, from where this slice
stopped reading (the saved cursor may lag behind, pinned at a tie group that
has not settled; restarting there each slice would chase a busy source
forever). While a group of records
sharing one updatedAt is being read (see ``paging``) the page budget waits,
because that group's progress lives only in memory.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

from worker.errors import (
    Blocked,
    Deferred,
    EntitySyncError,
    Halted,
    RetryLater,
    UpstreamError,
)
from worker.resilience.classify import Where
from worker.resilience.guard import Guard
from worker.settings import Settings
from worker.store import PageCommit, SqlStore
from worker.sync.full_read import Census, take_census
from worker.sync.pager import Pager
from worker.sync.records import split_records
from worker.upstream.client import UpstreamClient


@dataclass(frozen=True)
class SliceTarget:
    """What one slice syncs, and with which credentials."""

    connection_id: str
    entity_type: str
    run_id: str
    base_url: str
    token: str
    resume_from: str | None = None  # where the run's previous slice stopped reading
    horizon: str | None = None  # the run's horizon (see ``Pager``), once its first page set it
    full: bool = False  # a full read has no horizon: it must reach the list's end


@dataclass(frozen=True)
class SliceResult:
    """How far a slice got, and what stopped it early, if anything did."""

    done: bool
    position: str | None  # where the next slice of the run goes on reading
    pages: int
    records: int
    quarantined: int
    stopped_by: EntitySyncError | None = None  # a guard's verdict or an upstream failure
    horizon: str | None = None  # carried to the run's next slice
    census: Census | None = None  # a full read that reached the end: the closing check


def sync_slice(
    target: SliceTarget,
    *,
    store: SqlStore,
    client: UpstreamClient,
    settings: Settings,
    guard: Guard,
    before_page: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
) -> SliceResult:
    """Fetch and commit pages until the list ends or the slice's budget is spent.

    ``before_page`` runs before every request (the caller renews its lease
    there); every request goes through ``guard``. A guard's verdict or an
    upstream failure ends the slice and is returned in ``stopped_by``; store
    and Redis errors propagate. Pages committed before either stay committed.
    A guard that carries successes still carries the last one when the slice
    returns: its owner records it (``Guard.carried_record``).
    """
    pager = Pager(
        cursor=store.get_cursor(target.connection_id, target.entity_type),
        position=target.resume_from,
        per_page=settings.page_size,
        settle_s=settings.tie_settle_seconds,
        max_tie_passes=settings.max_tie_passes,
        horizon=target.horizon,
        horizon_margin_s=None if target.full else settings.run_horizon_margin_seconds,
    )
    started = clock()
    pages = records = quarantined = 0
    while not pager.done:
        over_budget = (
            pages >= settings.pages_per_task or clock() - started >= settings.task_time_budget
        )
        if over_budget and not pager.in_tie_scan:
            break
        before_page()
        fetch = functools.partial(
            client.list_page, target.base_url, target.token, target.entity_type, pager.next_query()
        )
        try:
            page = guard.call(target.entity_type, Where.LIST, fetch)
        except (UpstreamError, Deferred, Halted, Blocked, RetryLater) as exc:
            return SliceResult(
                False, pager.position, pages, records, quarantined, exc, pager.horizon
            )
        good, bad = split_records(page.records)
        pager.advance(page, good)
        store.commit_page(
            PageCommit(
                connection_id=target.connection_id,
                entity_type=target.entity_type,
                run_id=target.run_id,
                records=tuple(good),
                quarantined=tuple(bad),
                cursor=pager.cursor,
                listed_total=pager.listed_total if target.full else None,
                short=pager.short,
            )
        )
        pages += 1
        records += len(good)
        quarantined += len(bad)
    census = None
    if pager.done and target.full:
        before_page()
        census = take_census(
            client=client,
            guard=guard,
            base_url=target.base_url,
            token=target.token,
            entity_type=target.entity_type,
        )
    return SliceResult(
        done=pager.done,
        position=pager.position,
        pages=pages,
        records=records,
        quarantined=quarantined,
        horizon=pager.horizon,
        census=census,
    )
