"""What a full read must show before it may mark anything deleted (worker/sync/full_read.py).

The pager's evidence is checked against the in-memory list model of
``test_pager``, honest and lying; ``judge`` against every way a read can fall
short of proving itself.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.sync.test_pager import ModelUpstream
from worker.store.models import DeletionGuard, FullReadEvidence
from worker.sync.full_read import Census, judge
from worker.sync.pager import Pager
from worker.sync.records import split_records
from worker.upstream.client import Meta, Page

GUARD = DeletionGuard()  # 10% and 20 records
HONEST = FullReadEvidence(listed_total=465, keys_read=465, keyless=0, short_pages=0)
DONE = Census(sync_status="done", total=465)


def _read(upstream: ModelUpstream, lie: object = None) -> tuple[Pager, int, int | None, int]:
    """A full read from scratch; returns the pager, keys read, the first total, short pages."""
    pager = Pager(cursor=None, per_page=100, settle_s=2.0, max_tie_passes=10)
    keys: set[str] = set()
    first_total = None
    short = 0
    while not pager.done:
        page = upstream.answer(pager.next_query())
        if callable(lie):
            page = lie(page)
        good, _ = split_records(page.records)
        pager.advance(page, good)
        first_total = pager.listed_total if first_total is None else first_total
        short += pager.short
        keys.update(row.key for row in good)
    return pager, len(keys), first_total, short


def _upstream(count: int) -> ModelUpstream:
    upstream = ModelUpstream()
    for i in range(count):
        upstream.records[f"A-{i:05d}"] = upstream.tick()
    return upstream


def test_an_honest_read_shows_the_whole_list() -> None:
    _, read, first_total, short = _read(_upstream(465))
    assert (read, first_total, short) == (465, 465, 0)


def test_a_first_page_cut_short_is_seen_as_short() -> None:
    def cut(page: Page) -> Page:
        # 40 records, while meta still says a page of 100 and the whole total.
        return replace(page, records=page.records[:40])

    pager, read, first_total, short = _read(_upstream(465), cut)
    assert pager.done and read == 40 and first_total == 465 and short == 1


def test_a_last_page_short_of_its_own_last_page_is_seen_as_short() -> None:
    def lie(page: Page) -> Page:
        meta = Meta(current_page=1, last_page=3, per_page=100, total=None)
        return replace(page, records=page.records[:10], meta=meta)

    _, _, _, short = _read(_upstream(50), lie)
    assert short == 1


@pytest.mark.parametrize(
    ("evidence", "census", "says"),
    [
        (replace(HONEST, keyless=15), DONE, "15 records were read without a usable key"),
        (replace(HONEST, short_pages=1), DONE, "fewer records than its meta said"),
        (HONEST, None, "without a closing check"),
        (HONEST, Census(problem="the closing check ... 503"), "503"),
        (HONEST, Census(sync_status="inprogress", total=465), "'inprogress'"),
        (HONEST, Census(sync_status="error", total=465), "'error'"),
        (HONEST, Census(sync_status="done", total=None), "no meta.total at the read's end"),
        (replace(HONEST, listed_total=None), DONE, "no meta.total at the read's start"),
        # A lagging replica that caught up while it was read: more at the end.
        (replace(HONEST, keys_read=186), Census("done", 465), "186 keys read, fewer than"),
        # The list shrank while it was read by more than the guard takes at once.
        (
            replace(HONEST, keys_read=300),
            Census("done", 300),
            "165 fewer than the 465 records meta.total listed at the start",
        ),
        (None, DONE, "record of its read is missing"),
    ],
)
def test_a_read_that_cannot_show_all_of_it_proves_nothing(
    evidence: FullReadEvidence | None, census: Census | None, says: str
) -> None:
    verdict = judge(evidence, census, GUARD)
    assert verdict is not None and says in verdict


@pytest.mark.parametrize(
    ("evidence", "census"),
    [
        (HONEST, DONE),
        (HONEST, Census(sync_status="fulldone", total=465)),
        # Seven keys deleted for real while the list was read: honest, and proved.
        (replace(HONEST, keys_read=458), Census("done", 458)),
        # Records added while it was read are read too.
        (replace(HONEST, keys_read=470), Census("done", 470)),
        # A lagging replica consistent with itself proves its read: the guard
        # (worker/store/held_deletions.py) is what holds what it would delete.
        (replace(HONEST, listed_total=186, keys_read=186), Census("done", 186)),
    ],
)
def test_a_read_that_shows_it_all_is_complete(evidence: FullReadEvidence, census: Census) -> None:
    assert judge(evidence, census, GUARD) is None


def test_the_guard_holds_a_large_share_or_the_whole_pair() -> None:
    assert not GUARD.holds(7, 7, 465)  # an honest hard delete of a few keys
    assert not GUARD.holds(20, 20, 100)  # 20% but not more than 20 records
    assert GUARD.holds(21, 21, 100)  # more than 10% and more than 20
    assert not GUARD.holds(21, 21, 1000)  # more than 20 but 2.1%
    assert GUARD.holds(279, 279, 465)  # a lagging replica's 60%
    assert GUARD.holds(15, 15, 15)  # every record of a small pair: never on one read
    assert GUARD.holds(1, 3, 3)  # the last of them, with the rest already held
    assert not GUARD.holds(0, 0, 0)
