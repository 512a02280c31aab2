"""Paging that cannot loop: meta is checked, tie passes are bounded by meta.total.

Each upstream here breaks the list contract in a way that made the previous
pager request pages without end; each must end in a BadResponse (bad data)
after a bounded number of requests, with a message saying what was wrong.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.sync.test_pager import BASE, ModelUpstream, run_once
from worker.errors import BadResponse
from worker.sync.pager import Pager
from worker.sync.records import split_records
from worker.timeutil import canonical
from worker.upstream.client import Meta, Page, PageQuery

STAMP = canonical(BASE)
MAX_REQUESTS = 1000  # far above what any bounded pager needs here


def _tie_page(keys: list[str], meta: Meta) -> Page:
    return Page(records=[{"key": k, "updatedAt": STAMP} for k in keys], meta=meta, server_time=BASE)


def _drive(answer: Callable[[PageQuery], Page], *, per_page: int = 10) -> int:
    """Run a pager against ``answer``; the number of requests before it stopped."""
    pager = Pager(cursor=None, per_page=per_page, settle_s=0.0, max_tie_passes=20)
    for requests in range(1, MAX_REQUESTS + 1):
        page = answer(pager.next_query())
        pager.advance(page, split_records(page.records)[0])
        if pager.done:
            return requests
    raise AssertionError(f"still paging after {MAX_REQUESTS} requests")


def test_an_upstream_ignoring_page_inside_a_tie_group_is_bad_data() -> None:
    keys = [f"k{i:03}" for i in range(10)]

    def answer(query: PageQuery) -> Page:
        # Thirty records share one updatedAt, but every page is the first one.
        return _tie_page(keys, Meta(per_page=10, total=30))

    with pytest.raises(BadResponse, match="ignores the page parameter"):
        _drive(answer)


def test_ignoring_page_without_a_total_or_last_page_is_caught_as_a_repeat() -> None:
    keys = [f"k{i:03}" for i in range(10)]

    def answer(query: PageQuery) -> Page:
        return _tie_page(keys, Meta(per_page=10))

    with pytest.raises(BadResponse, match="repeats page 1"):
        _drive(answer)


def test_a_group_that_pages_past_its_own_total_is_bad_data() -> None:
    def answer(query: PageQuery) -> Page:
        # New keys on every page, for ever, while meta.total says 25.
        keys = [f"p{query.page}-{i}" for i in range(10)]
        return _tie_page(keys, Meta(per_page=10, total=25))

    with pytest.raises(BadResponse, match="paging does not end"):
        _drive(answer)


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        (Meta(per_page=-1), "per_page"),
        (Meta(per_page=0), "per_page"),
        (Meta(per_page=10, total=-5), "total"),
        (Meta(per_page=10, last_page=-1), "last_page"),
    ],
)
def test_a_meta_that_cannot_steer_paging_is_bad_data(meta: Meta, field: str) -> None:
    def answer(query: PageQuery) -> Page:
        # per_page -1 made every page "full", even an empty one, for ever.
        return Page(records=[], meta=meta, server_time=BASE)

    with pytest.raises(BadResponse, match=f"meta.{field}"):
        _drive(answer)


def test_an_upstream_that_clamps_the_page_size_is_still_read_whole() -> None:
    """The bound counts pages of the size the upstream says it used."""
    upstream = ModelUpstream()
    upstream.bulk("tie", 95)

    def answer(query: PageQuery) -> Page:
        page = upstream.answer(PageQuery(query.page, 5, query.since, query.before))
        meta = page.meta.model_copy(update={"per_page": 5})
        return Page(records=page.records, meta=meta, server_time=page.server_time)

    requests = _drive(answer, per_page=10)
    assert requests < 100


def test_honest_shuffled_ties_with_small_pages_still_converge() -> None:
    upstream = ModelUpstream(shuffle_ties=True)
    upstream.bulk("tie", 23)
    store: dict[str, int] = {}
    run_once(upstream, store, None, per_page=2)
    assert store == upstream.records
