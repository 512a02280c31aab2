"""The sandbox's lies over real HTTP: answers that look complete while records are missing.

Each lie (harness/sandbox/lies.py) is switched on at run time through the
control API, on page 1 and later pages, under ``filter[updatedAt:gteq]``,
``filter[updatedAt:lt]`` and both, as a keyset client asks. The truth under
the lie stays intact; an honest hard delete is shown as the real thing.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import count
from typing import Any

import httpx
import pytest

from harness.sandbox.lies import in_replica
from harness.sandbox.presets import preset
from harness.testing.sandbox import SandboxError, SandboxHandle, running_sandbox

pytestmark = pytest.mark.integration

SEED = 31
SIZE = 330  # above 300: the generator's bulk import of 120 records sharing one instant
_tokens = count()
GTEQ, LT = "filter[updatedAt:gteq]", "filter[updatedAt:lt]"


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxHandle]:
    with running_sandbox(preset="empty") as handle:
        yield handle


def liar(sb: SandboxHandle, *scenarios: dict[str, Any]) -> str:
    """A fresh connection of SIZE assets, honest until its scenarios are set."""
    token = f"liar{next(_tokens)}"
    sb.put_connection(token, {"seed": SEED, "default_size": 15, "sizes": {"assets": SIZE}})
    if scenarios:
        sb.set_scenarios(token, list(scenarios))
    return token


def get(sb: SandboxHandle, token: str, path: str = "/api/eam/assets", **params: Any) -> Any:
    with sb.api(token) as client:
        response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def read_all(sb: SandboxHandle, token: str, per_page: int = 100, **filters: str) -> list[Any]:
    """Every page of a query by page numbers, up to the last page ``meta`` names."""
    records: list[Any] = []
    page = 1
    while True:
        body = get(sb, token, page=page, per_page=per_page, **filters)
        records += body["data"]
        if page >= body["meta"]["last_page"]:
            return records
        page += 1


def pivots(sb: SandboxHandle, token: str) -> tuple[str, str, str]:
    """Three filter instants from the data itself: a third in, two thirds in, the bulk group."""
    stamps = sorted(r["updatedAt"] for r in sb.truth(token, "assets"))
    bulk, size = Counter(stamps).most_common(1)[0]
    assert size > 100  # the tie group is bigger than a page
    return stamps[len(stamps) // 3], stamps[2 * len(stamps) // 3], bulk


def just_after(instant: str) -> str:
    return (datetime.fromisoformat(instant) + timedelta(microseconds=1)).isoformat()


def truth_between(sb: SandboxHandle, token: str, gteq: str | None, lt: str | None) -> list[Any]:
    low = datetime.fromisoformat(gteq) if gteq else None
    high = datetime.fromisoformat(lt) if lt else None
    return [
        r
        for r in sb.truth(token, "assets")
        if (low is None or datetime.fromisoformat(r["updatedAt"]) >= low)
        and (high is None or datetime.fromisoformat(r["updatedAt"]) < high)
    ]


def queries(sb: SandboxHandle, token: str) -> list[dict[str, str]]:
    """The filters a keyset client sends: none, gteq, lt, a window, a tie group's window."""
    third, two_thirds, bulk = pivots(sb, token)
    return [
        {},
        {GTEQ: third},
        {LT: two_thirds},
        {GTEQ: third, LT: two_thirds},
        {GTEQ: bulk, LT: just_after(bulk)},
    ]


# -- the lies ------------------------------------------------------------------------


def test_empty_answers_nothing_on_every_page_and_filter(sb: SandboxHandle) -> None:
    token = liar(sb, {"name": "empty"})
    for filters in queries(sb, token):
        for page in (1, 2):
            body = get(sb, token, page=page, per_page=100, **filters)
            assert body["data"] == []
            assert body["meta"]["total"] == 0 and body["meta"]["last_page"] == 1
            assert body["links"]["next"] is None
    assert len(sb.truth(token, "assets")) == SIZE  # while the records exist


def test_cut_short_cuts_page_one_while_meta_promises_a_full_page(sb: SandboxHandle) -> None:
    token = liar(sb, {"name": "cut_short"})
    for filters in queries(sb, token):
        expected = truth_between(sb, token, filters.get(GTEQ), filters.get(LT))
        first = get(sb, token, page=1, per_page=100, **filters)
        assert len(first["data"]) == 40, filters
        meta = first["meta"]
        assert meta["per_page"] == 100 and meta["total"] == len(expected)
        assert meta["last_page"] == math.ceil(len(expected) / 100)
        assert meta["to"] == 100  # as if the page were whole
        # The 40 are the first 40 of the honest page; page 2 is whole.
        honest = sorted(expected, key=lambda r: (r["updatedAt"], r["key"]))
        assert [r["key"] for r in first["data"]] == [r["key"] for r in honest[:40]]
        second = get(sb, token, page=2, per_page=100, **filters)
        assert len(second["data"]) == min(100, len(expected) - 100)
    # Whatever the page size, page 1 is never full.
    assert len(get(sb, token, page=1, per_page=25)["data"]) == 24
    assert len(get(sb, token, page=1, per_page=100)["data"]) == 40


def test_lagging_replica_serves_a_stable_subset_with_consistent_meta(sb: SandboxHandle) -> None:
    token = liar(sb, {"name": "lagging_replica", "share": 0.4})
    served_all = read_all(sb, token, per_page=50)
    keys = [r["key"] for r in served_all]
    assert len(keys) == len(set(keys)), "a record served twice"
    truth = {r["key"] for r in sb.truth(token, "assets")}
    expected = {k for k in truth if in_replica(SEED, k, 0.4)}
    assert set(keys) == expected
    assert 0.3 * SIZE < len(expected) < 0.5 * SIZE
    assert get(sb, token, per_page=50)["meta"]["total"] == len(expected)

    for filters in queries(sb, token):
        window = {
            r["key"] for r in truth_between(sb, token, filters.get(GTEQ), filters.get(LT))
        } & expected
        body = get(sb, token, page=1, per_page=20, **filters)
        assert body["meta"]["total"] == len(window), filters
        assert body["meta"]["last_page"] == max(1, math.ceil(len(window) / 20))
        served = read_all(sb, token, per_page=20, **filters)
        assert [r["key"] for r in served] == sorted(
            window, key=lambda k: ([r["updatedAt"] for r in served_all if r["key"] == k][0], k)
        )

    # The same keys on the next read, and after the source changed: per key, not per position.
    sb.mutate(token, updates=20, entities=["assets"])
    assert {r["key"] for r in read_all(sb, token)} == expected

    # Ties in a new order on every request: still only the replica's keys, same total.
    shuffled = f"liar{next(_tokens)}"
    sb.put_connection(shuffled, {"seed": SEED, "sizes": {"assets": SIZE}, "tie_order": "shuffled"})
    sb.set_scenarios(shuffled, [{"name": "lagging_replica", "share": 0.4}])
    _, _, bulk = pivots(sb, shuffled)
    tie = {GTEQ: bulk, LT: just_after(bulk)}
    in_tie = {r["key"] for r in truth_between(sb, shuffled, bulk, just_after(bulk))} & expected
    for _ in range(3):
        body = get(sb, shuffled, page=1, per_page=20, **tie)
        assert body["meta"]["total"] == len(in_tie)
        assert {r["key"] for r in body["data"]} <= in_tie and len(body["data"]) == 20


def test_lagging_replica_while_the_status_says_inprogress(sb: SandboxHandle) -> None:
    token = liar(sb)
    status = get(sb, token, "/api/integrations/current")["data"]
    assert status["sync_status"] == "done"
    sb.set_scenarios(
        token,
        [{"name": "lagging_replica"}, {"name": "sync_status", "sync_status": "inprogress"}],
    )
    assert get(sb, token, "/api/integrations/current")["data"]["sync_status"] == "inprogress"
    assert get(sb, token)["meta"]["total"] < 0.5 * SIZE
    # The status alone, with honest lists; then neither.
    sb.set_scenarios(token, [{"name": "sync_status", "sync_status": "fulldone"}])
    assert get(sb, token, "/api/integrations/current")["data"]["sync_status"] == "fulldone"
    assert get(sb, token)["meta"]["total"] == SIZE
    sb.set_scenarios(token, [])
    assert get(sb, token, "/api/integrations/current")["data"]["sync_status"] == "done"


def test_keyless_sends_every_record_with_key_spelled_Key(sb: SandboxHandle) -> None:  # noqa: N802
    token = liar(sb, {"name": "keyless", "entity": "assets"})
    for filters in queries(sb, token):
        body = get(sb, token, page=1, per_page=100, **filters)
        expected = truth_between(sb, token, filters.get(GTEQ), filters.get(LT))
        assert body["meta"]["total"] == len(expected)
        assert body["data"] and all("key" not in r and r["Key"] for r in body["data"])
    # Only the entity type named; the truth keeps its keys.
    assert all("key" in r for r in get(sb, token, "/api/eam/sites")["data"])
    assert all("key" in r for r in sb.truth(token, "assets"))


def test_a_lie_switched_on_at_run_time_keeps_the_data_and_can_start_mid_read(
    sb: SandboxHandle,
) -> None:
    token = liar(sb)
    honest = read_all(sb, token)
    # From the third list request of the connection on: two honest pages, then nothing.
    sb.set_scenarios(token, [{"name": "empty", "from_request": 3}])
    assert len(get(sb, token, page=1, per_page=100)["data"]) == 100
    assert len(get(sb, token, page=2, per_page=100)["data"]) == 100
    assert get(sb, token, page=3, per_page=100)["data"] == []
    assert get(sb, token, page=1, per_page=100)["meta"]["total"] == 0
    sb.set_scenarios(token, [])
    assert read_all(sb, token) == honest
    assert sb.truth(token, "assets") == honest


def test_an_honest_hard_delete_removes_keys_for_real(sb: SandboxHandle) -> None:
    token = liar(sb)
    removed = sb.mutate(token, hard_deletes=7, entities=["assets"])["assets"]["removed"]
    assert len(removed) == 7
    listed = read_all(sb, token)
    assert get(sb, token)["meta"]["total"] == SIZE - 7 == len(listed)
    assert not set(removed) & {r["key"] for r in listed}
    assert all(r["deletedAt"] is None for r in listed)  # no trace, no soft delete


def test_lie_parameters_are_checked_and_the_lying_preset_loads(sb: SandboxHandle) -> None:
    token = liar(sb)
    for bad in (
        {"name": "lagging_replica", "share": 1.5},
        {"name": "cut_short", "keep": -1},
        {"name": "sync_status", "sync_status": "sleeping"},
        {"name": "empty", "from_request": 0},
    ):
        with pytest.raises(SandboxError, match="400"):
            sb.set_scenarios(token, [bad])
    config = preset("lying")
    names = {s.name for c in config.connections.values() for s in c.scenarios}
    assert names == {"empty", "cut_short", "lagging_replica", "keyless", "sync_status"}
    # Served as a preset, each liar is honest at first: time for a first sync.
    with running_sandbox(preset="lying") as lying:
        assert httpx.get(f"{lying.url}/_sandbox/health").json() == {"status": "ok"}
        for token in config.connections:
            assert get(lying, token, per_page=100)["meta"]["total"] == 465
