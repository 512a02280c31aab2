"""``sync_slice`` with a fake upstream client: pages commit with their cursor,
budgets end a slice, a verdict stops it and what was committed stays.

The guard runs on the in-memory breaker; the store is SQLite in a temporary
directory; the client answers from a list of records (ascending updatedAt,
the keyset query the pager sends) or raises what a row asks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.testing.memory_breaker import MemoryBreaker
from worker.errors import AuthFailed, Halted, RetryLater, Unavailable
from worker.resilience.guard import Guard
from worker.settings import Settings
from worker.store import Connection, SqlStore, open_store
from worker.sync.slice import SliceTarget, sync_slice
from worker.timeutil import canonical
from worker.upstream.client import Meta, Page, PageQuery

BASE = datetime(2026, 1, 1, tzinfo=UTC)


class FakeUpstream:
    """``UpstreamClient.list_page`` over a list of records; ``fail_at`` raises on call n."""

    def __init__(self, count: int, *, fail_at: dict[int, Exception] | None = None) -> None:
        self.records = [
            {"key": f"r-{i:04d}", "updatedAt": canonical(BASE + timedelta(seconds=i))}
            for i in range(count)
        ]
        self.fail_at = fail_at or {}
        self.calls = 0

    def list_page(self, base_url: str, token: str, entity_type: str, query: PageQuery) -> Page:
        self.calls += 1
        if self.calls in self.fail_at:
            raise self.fail_at[self.calls]
        rows = [r for r in self.records if query.since is None or r["updatedAt"] >= query.since]
        if query.before is not None:
            rows = [r for r in rows if r["updatedAt"] < query.before]
        start = (query.page - 1) * query.per_page
        chunk = rows[start : start + query.per_page]
        return Page(
            records=[dict(r) for r in chunk],
            meta=Meta(current_page=query.page, per_page=query.per_page, total=len(rows)),
            server_time=BASE + timedelta(days=1),
        )


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    store.add_connection(Connection(id="acme", name="Acme", entity_types=("assets",)))
    return store


def _run(store: SqlStore, client: FakeUpstream, *, pages_per_task: int = 50, **target: Any) -> Any:
    settings = Settings(  # type: ignore[call-arg]
        store_url="sqlite:///unused.db", page_size=10, pages_per_task=pages_per_task
    )
    guard = Guard(
        breaker=MemoryBreaker(),  # type: ignore[arg-type]
        connection_id="acme",
        entity_types_synced=1,
        on_transition=lambda _change: None,
        sleep=lambda _s: None,
    )
    renewed: list[int] = []
    result = sync_slice(
        SliceTarget("acme", "assets", "run-1", "https://api.example", "tok", **target),
        store=store,
        client=client,  # type: ignore[arg-type]
        settings=settings,
        guard=guard,
        before_page=lambda: renewed.append(1),
    )
    assert len(renewed) == client.calls  # the lease is renewed before every request
    return result


def test_a_slice_reads_to_the_end_and_commits_every_record(store: SqlStore) -> None:
    client = FakeUpstream(35)
    result = _run(store, client)
    assert result.done and result.stopped_by is None
    assert result.quarantined == 0
    # Keyset paging reads each page from its cursor on (updatedAt >= cursor), so
    # a page boundary record comes back once more; the store keeps it once.
    assert result.records >= 35
    assert sorted(r.key for r in store.records("acme", "assets")) == [
        f"r-{i:04d}" for i in range(35)
    ]
    assert store.get_cursor("acme", "assets") is not None


def test_the_page_budget_ends_a_slice_and_the_next_one_goes_on_from_its_position(
    store: SqlStore,
) -> None:
    client = FakeUpstream(35)
    first = _run(store, client, pages_per_task=2)
    assert not first.done and first.pages == 2
    rest = _run(store, FakeUpstream(35), resume_from=first.position)
    assert rest.done
    assert len(store.records("acme", "assets")) == 35


def test_a_verdict_stops_the_slice_and_keeps_what_was_committed(store: SqlStore) -> None:
    client = FakeUpstream(35, fail_at={3: Unavailable("503", status=503)})
    result = _run(store, client)
    assert not result.done
    assert isinstance(result.stopped_by, RetryLater)
    assert result.pages == 2
    assert len(store.records("acme", "assets")) == result.records - 1  # one boundary re-read
    assert store.get_cursor("acme", "assets") is not None


def test_a_401_halts_and_no_further_request_is_sent(store: SqlStore) -> None:
    client = FakeUpstream(35, fail_at={1: AuthFailed("expired", status=401)})
    result = _run(store, client)
    assert isinstance(result.stopped_by, Halted)
    assert (result.pages, client.calls) == (0, 1)
