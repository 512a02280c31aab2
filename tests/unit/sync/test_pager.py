"""The Pager against an in-memory model of the list contract, mutated between requests.

The model answers like docs/upstream-api.md: pages computed per request from the
current data, ascending updatedAt, ties in any order. Hypothesis mutates it
between requests (updates move records to the end, bulk imports create large
tie groups) and checks that a run plus one incremental run loses nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from worker.errors import BadResponse
from worker.sync.pager import Pager
from worker.sync.records import split_records
from worker.timeutil import after, canonical
from worker.upstream.client import Meta, Page, PageQuery

BASE = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class ModelUpstream:
    """Records keyed by key; updatedAt in whole seconds from BASE."""

    now: int = 10_000
    records: dict[str, int] = field(default_factory=dict)
    shuffle_ties: bool = False
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    requests: int = 0

    def stamp(self, second: int) -> str:
        return canonical(BASE + timedelta(seconds=second))

    def tick(self) -> int:
        self.now += 1
        return self.now

    def update(self, key: str) -> None:
        self.records[key] = self.tick()

    def bulk(self, prefix: str, count: int) -> None:
        at = self.tick()
        for i in range(count):
            self.records[f"{prefix}-{i:05d}"] = at

    def answer(self, query: PageQuery, per_page_cap: int = 100) -> Page:
        self.requests += 1
        per_page = min(query.per_page, per_page_cap)
        rows = sorted(self.records.items(), key=lambda kv: (kv[1], self._tie_order(kv[0])))
        if query.since is not None:
            rows = [r for r in rows if self.stamp(r[1]) >= query.since]
        if query.before is not None:
            rows = [r for r in rows if self.stamp(r[1]) < query.before]
        start = (query.page - 1) * per_page
        chunk = rows[start : start + per_page]
        last_page = max(1, -(-len(rows) // per_page))
        return Page(
            records=[{"key": k, "updatedAt": self.stamp(s), "deletedAt": None} for k, s in chunk],
            meta=Meta(
                current_page=query.page, last_page=last_page, per_page=per_page, total=len(rows)
            ),
            # The upstream's clock runs far ahead of the data: every tie group is settled.
            server_time=BASE + timedelta(seconds=self.now + 3600),
        )

    def _tie_order(self, key: str) -> float | str:
        return self.rng.random() if self.shuffle_ties else key


def run_once(
    upstream: ModelUpstream,
    store: dict[str, int],
    cursor: str | None,
    mutate: object = None,
    per_page: int = 100,
    horizon_margin_s: float | None = None,
) -> str | None:
    pager = Pager(
        cursor=cursor,
        per_page=per_page,
        settle_s=2.0,
        max_tie_passes=50,
        horizon_margin_s=horizon_margin_s,
    )
    while not pager.done:
        page = upstream.answer(pager.next_query())
        good, _ = split_records(page.records)
        pager.advance(page, good)
        for row in good:
            second = int((datetime.fromisoformat(row.updated_at) - BASE).total_seconds())
            if store.get(row.key, -1) <= second:
                store[row.key] = second
        if callable(mutate):
            mutate()
    return pager.cursor


def test_ties_bigger_than_a_page_are_all_read() -> None:
    upstream = ModelUpstream()
    upstream.bulk("tie", 250)
    store: dict[str, int] = {}
    run_once(upstream, store, None)
    assert store == upstream.records


def test_shuffled_ties_need_more_passes_but_lose_nothing() -> None:
    upstream = ModelUpstream(shuffle_ties=True)
    upstream.bulk("tie", 250)
    store: dict[str, int] = {}
    run_once(upstream, store, None)
    assert store == upstream.records


def test_unsettled_tie_group_pins_the_cursor() -> None:
    upstream = ModelUpstream()
    upstream.bulk("tie", 150)
    for i in range(10):
        upstream.records[f"late-{i}"] = upstream.tick()
    pager = Pager(cursor=None, per_page=100, settle_s=2.0, max_tie_passes=5)
    while not pager.done:
        page = upstream.answer(pager.next_query())
        # The upstream's clock says the group was written a second ago.
        page = Page(
            records=page.records, meta=page.meta, server_time=BASE + timedelta(seconds=10_001 + 1)
        )
        good, _ = split_records(page.records)
        pager.advance(page, good)
    assert pager.cursor == upstream.stamp(10_001)


def test_a_key_leaving_the_group_between_passes_does_not_count_for_one_never_read() -> None:
    """Pass 1 sees a and b of {a, b, c}; b then leaves; pass 2 sees only a, twice.

    The keys seen so far ({a, b}) match the new total (2), yet c was never read.
    """
    at = canonical(BASE)
    records = {"a": at, "b": at, "c": at}
    # The order of the group's records for each request inside its window.
    orders = [["a", "b", "c"], ["a", "b", "c"], ["c", "b", "a"], ["a", "c"], ["c", "a"]]
    requests = 0

    def answer(query: PageQuery) -> Page:
        nonlocal requests
        requests += 1
        rows = sorted((s, k) for k, s in records.items() if query.since is None or s >= query.since)
        keys = [k for s, k in rows if query.before is None or s < query.before]
        if query.before == after(at) and orders:
            keys = orders.pop(0)
            assert sorted(keys) == sorted(k for k, s in records.items() if s == at)
        chunk = keys[(query.page - 1) * query.per_page :][: query.per_page]
        last = max(1, -(-len(keys) // query.per_page))
        return Page(
            records=[{"key": k, "updatedAt": records[k]} for k in chunk],
            meta=Meta(per_page=query.per_page, total=len(keys), last_page=last),
            server_time=BASE + timedelta(hours=1),
        )

    pager = Pager(cursor=None, per_page=1, settle_s=2.0, max_tie_passes=10)
    read: set[str] = set()
    while not pager.done:
        page = answer(pager.next_query())
        good, _ = split_records(page.records)
        pager.advance(page, good)
        read.update(row.key for row in good)
        if requests == 4:  # after pass 1: b is updated and leaves the group
            records["b"] = canonical(BASE + timedelta(seconds=5))
    assert read == {"a", "b", "c"}


def test_a_page_that_ignores_the_filter_is_refused() -> None:
    pager = Pager(
        cursor=canonical(BASE + timedelta(days=1)), per_page=2, settle_s=1, max_tie_passes=2
    )
    records = [
        {"key": "a", "updatedAt": canonical(BASE)},
        {"key": "b", "updatedAt": canonical(BASE + timedelta(seconds=1))},
    ]
    page = Page(records=records, meta=Meta(per_page=2), server_time=BASE)
    with pytest.raises(BadResponse):
        pager.advance(page, split_records(records)[0])


def test_plain_page_numbers_would_skip_records() -> None:
    """The hazard the Pager exists for, shown on the same model."""
    upstream = ModelUpstream()
    for i in range(300):
        upstream.records[f"r-{i:04d}"] = i
    seen: set[str] = set()
    page_number = 1
    while True:
        page = upstream.answer(PageQuery(page=page_number, per_page=100))
        seen.update(r["key"] for r in page.records)
        upstream.update(f"r-{page_number:04d}")  # an early record moves to the end
        if page_number >= (page.meta.last_page or 1):
            break
        page_number += 1
    assert seen != set(upstream.records)


mutation = st.one_of(
    st.tuples(st.just("update"), st.integers(0, 10_000)),
    st.tuples(st.just("bulk"), st.integers(1, 260)),
    st.tuples(st.just("insert"), st.integers(1, 5)),
    st.tuples(st.just("none"), st.just(0)),
)


@settings(max_examples=40, deadline=None)
@example(
    # A seed-tie key leaves the group between two passes; the next pass counted it
    # towards the smaller total and never read seed-tie-00002.
    initial=2,
    initial_ties=157,
    mutations=[
        ("update", 0),
        ("insert", 2),
        ("bulk", 206),
        ("bulk", 166),
        ("insert", 1),
        ("insert", 5),
        ("bulk", 243),
        ("insert", 1),
        ("bulk", 139),
        ("update", 5527),
        ("bulk", 204),
    ],
    per_page=50,
    shuffle=True,
)
@given(
    initial=st.integers(0, 400),
    initial_ties=st.integers(0, 260),
    mutations=st.lists(mutation, max_size=40),
    per_page=st.sampled_from([7, 50, 100]),
    shuffle=st.booleans(),
)
def test_run_plus_incremental_run_converges(
    initial: int,
    initial_ties: int,
    mutations: list[tuple[str, int]],
    per_page: int,
    shuffle: bool,
) -> None:
    upstream = ModelUpstream(shuffle_ties=shuffle)
    for i in range(initial):
        upstream.records[f"r-{i:05d}"] = upstream.rng.randrange(0, 5000)
    if initial_ties:
        upstream.bulk("seed-tie", initial_ties)
    pending = list(mutations)
    inserted = 0

    def mutate() -> None:
        nonlocal inserted
        if not pending:
            return
        what, n = pending.pop(0)
        if what == "update" and upstream.records:
            keys = sorted(upstream.records)
            upstream.update(keys[n % len(keys)])
        elif what == "bulk":
            upstream.bulk(f"bulk-{len(pending)}", n)
        elif what == "insert":
            for _ in range(n):
                inserted += 1
                upstream.records[f"new-{inserted:05d}"] = upstream.tick()

    store: dict[str, int] = {}
    cursor = run_once(upstream, store, None, mutate, per_page)
    run_once(upstream, store, cursor, None, per_page)
    assert store == upstream.records


@dataclass
class LiveClockUpstream(ModelUpstream):
    """An upstream whose Date header is its own clock, so changes made now are after it."""

    def answer(self, query: PageQuery, per_page_cap: int = 100) -> Page:
        page = super().answer(query, per_page_cap)
        return Page(page.records, page.meta, server_time=BASE + timedelta(seconds=self.now))


def _busy(upstream: ModelUpstream, count: int) -> None:
    """Move ``count`` of the oldest records to the end, as a busy ERP's edits would."""
    for key, _ in sorted(upstream.records.items(), key=lambda kv: kv[1])[:count]:
        upstream.update(key)


def test_a_run_ends_though_the_source_changes_faster_than_it_reads() -> None:
    upstream = LiveClockUpstream()
    for i in range(1_000):
        upstream.records[f"r-{i:04d}"] = upstream.tick()
    store: dict[str, int] = {}
    # Every request moves 150 records to the end: more than a page of 100 reads.
    cursor = run_once(
        upstream, store, None, mutate=lambda: _busy(upstream, 150), horizon_margin_s=0.0
    )
    # It read the list as it was at its first request (10 pages) and one page
    # past it, not the stream of edits after (32 pages here without a horizon).
    assert upstream.requests <= 12
    # The next run, once the edits stop, brings every change in: nothing was lost.
    run_once(upstream, store, cursor, horizon_margin_s=0.0)
    assert store == upstream.records


def test_the_horizon_carries_over_to_the_next_slice_of_a_run() -> None:
    upstream = LiveClockUpstream()
    for i in range(300):
        upstream.records[f"r-{i:04d}"] = upstream.tick()
    first = Pager(cursor=None, per_page=100, settle_s=0.0, max_tie_passes=5, horizon_margin_s=0.0)
    page = upstream.answer(first.next_query())
    first.advance(page, split_records(page.records)[0])
    horizon = first.horizon
    assert horizon == upstream.stamp(10_300)
    for i in range(300):
        upstream.records[f"new-{i:04d}"] = upstream.tick()
    # The run's next slice reads on from where the first stopped, up to the
    # same horizon, though the upstream's clock has moved on.
    second = Pager(
        cursor=first.cursor,
        position=first.position,
        per_page=100,
        settle_s=0.0,
        max_tie_passes=5,
        horizon=horizon,
    )
    pages = 0
    while not second.done:
        page = upstream.answer(second.next_query())
        second.advance(page, split_records(page.records)[0])
        pages += 1
    assert second.horizon == horizon
    assert pages == 3  # records 100..300, then the first page past the horizon


def test_a_full_read_has_no_horizon() -> None:
    upstream = LiveClockUpstream()
    for i in range(1_000):
        upstream.records[f"r-{i:04d}"] = upstream.tick()
    pager = Pager(cursor=None, per_page=100, settle_s=0.0, max_tie_passes=5)
    pages = 0
    while not pager.done:
        page = upstream.answer(pager.next_query())
        pager.advance(page, split_records(page.records)[0])
        if pages < 5:  # records move past the clock of the first page while it reads
            _busy(upstream, 150)
        pages += 1
    # It read on to a page that was not full: every key, as reconciliation needs.
    assert pager.horizon is None and pages > 11
