"""The sandbox over real HTTP: contract shape, queries, mutations, faults, control API."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from itertools import count
from typing import Any

import httpx
import pytest

from harness.testing.sandbox import SandboxHandle, running_sandbox

pytestmark = pytest.mark.integration

DATA_END = "2026-11-01T00:00:00Z"
CONFIG: dict[str, Any] = {
    "data_end": DATA_END,
    "connections": {"base": {"seed": 7, "default_size": 50, "sizes": {"assets": 230}}},
}
_tokens = count()


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxHandle]:
    with running_sandbox(CONFIG) as handle:
        yield handle


def new_conn(sb: SandboxHandle, **spec: Any) -> str:
    """A fresh connection with its own token; small data unless sizes say otherwise."""
    token = f"t{next(_tokens)}"
    sb.put_connection(token, {"seed": 11, "default_size": 40, **spec})
    return token


def get(sb: SandboxHandle, token: str, path: str, **params: Any) -> httpx.Response:
    with sb.api(token) as client:
        return client.get(path, params=params)


def error_code(response: httpx.Response) -> str:
    body = response.json()["error"]
    assert body["request_id"] and body["message"] and body["type"]
    code: str = body["code"]
    return code


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- contract shape ---------------------------------------------------------------


def test_envelope_links_and_meta(sb: SandboxHandle) -> None:
    r = get(sb, "base", "/api/eam/assets", page=2, per_page=100)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert int(r.headers["content-length"]) == len(r.content)
    assert parsedate_to_datetime(r.headers["date"]).tzinfo is not None
    body = r.json()
    assert set(body) == {"data", "links", "meta"}
    assert body["meta"] == {
        "current_page": 2,
        "last_page": 3,
        "per_page": 100,
        "total": 230,
        "from": 101,
        "to": 200,
    }
    links = body["links"]
    assert links["first"].startswith(f"{sb.url}/api/eam/assets?page=1&per_page=100")
    assert "page=3" in links["last"] and "page=3" in links["next"] and "page=1" in links["prev"]
    record = body["data"][0]
    assert record["key"].startswith("A-") and record["deletedAt"] is None
    for field in ("updatedAt", "createdAt"):
        assert record[field].endswith("Z") and instant(record[field]).tzinfo is not None
    for field in ("siteKey", "locationKey", "criticality", "serialNumber"):
        assert field in record

    last = get(sb, "base", "/api/eam/assets", page=3, per_page=100).json()
    assert len(last["data"]) == 30 and last["links"]["next"] is None
    beyond = get(sb, "base", "/api/eam/assets", page=9, per_page=100).json()
    assert beyond["data"] == [] and beyond["meta"]["from"] is None

    # Links keep the filters, so following "next" continues the same query.
    filtered = get(
        sb,
        "base",
        "/api/eam/assets",
        per_page=10,
        **{"filter[updatedAt:gteq]": "2026-01-01T00:00:00Z"},
    ).json()
    with sb.api("base") as client:
        following = client.get(filtered["links"]["next"]).json()
    assert following["meta"]["current_page"] == 2
    assert following["meta"]["total"] == filtered["meta"]["total"]


def test_nested_fields_per_entity(sb: SandboxHandle) -> None:
    token = new_conn(sb, default_size=30)
    sites = get(sb, token, "/api/eam/sites").json()["data"]
    assert {"street", "city", "postalCode", "country"} <= set(sites[0]["address"])
    orders = get(sb, token, "/api/eam/work-orders", per_page=30).json()["data"]
    assert any(o["tasks"] for o in orders) and all(isinstance(o["tasks"], list) for o in orders)
    pos = get(sb, token, "/api/eam/purchase-orders").json()["data"]
    assert all(po["lineItems"] and "totalNetValue" in po for po in pos)


def test_status_endpoint(sb: SandboxHandle) -> None:
    token = new_conn(sb, company_name="Acme Plant 3", provider="maximo")
    data = get(sb, token, "/api/integrations/current").json()["data"]
    assert data["company_name"] == "Acme Plant 3" and data["provider"] == "maximo"
    assert data["sync_status"] == "done" and len(data["id"]) == 14
    assert {"updated_at", "sync_updated_at"} <= set(data)


def test_auth_and_unknown_entity(sb: SandboxHandle) -> None:
    assert error_code(httpx.get(f"{sb.url}/api/eam/assets")) == "AUTHENTICATION_FAILED"
    basic = httpx.get(f"{sb.url}/api/eam/assets", headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401
    assert get(sb, "nobody", "/api/eam/assets").status_code == 401
    r = get(sb, "base", "/api/eam/spaceships")
    assert r.status_code == 404 and error_code(r) == "ENTITY_NOT_SUPPORTED"


def test_per_page_clamped_and_invalid(sb: SandboxHandle) -> None:
    assert get(sb, "base", "/api/eam/assets").json()["meta"]["per_page"] == 25
    big = get(sb, "base", "/api/eam/assets", per_page=500).json()
    assert big["meta"]["per_page"] == 100 and len(big["data"]) == 100
    for params in (
        {"per_page": 0},
        {"per_page": -3},
        {"per_page": "ten"},
        {"page": 0},
        {"page": "x"},
    ):
        r = get(sb, "base", "/api/eam/assets", **params)
        assert r.status_code == 422, params
        assert error_code(r) == "INVALID_REQUEST"


# --- queries ----------------------------------------------------------------------


def test_filters_and_descending_sort(sb: SandboxHandle) -> None:
    truth = sb.truth("base", "assets")
    stamps = sorted(instant(r["updatedAt"]) for r in truth)
    pivot = stamps[100]
    expected_ge = sum(1 for s in stamps if s >= pivot)
    gteq = get(
        sb,
        "base",
        "/api/eam/assets",
        per_page=100,
        **{"filter[updatedAt:gteq]": pivot.isoformat().replace("+00:00", "Z")},
    ).json()
    assert gteq["meta"]["total"] == expected_ge
    assert all(instant(r["updatedAt"]) >= pivot for r in gteq["data"])

    # The same instant written with an offset and fractional seconds.
    shifted = (pivot + timedelta(hours=2)).replace(tzinfo=None).isoformat() + ".000+02:00"
    lt = get(
        sb, "base", "/api/eam/assets", per_page=100, **{"filter[updatedAt:lt]": shifted}
    ).json()
    assert lt["meta"]["total"] == len(stamps) - expected_ge
    assert all(instant(r["updatedAt"]) < pivot for r in lt["data"])

    desc = get(sb, "base", "/api/eam/assets", per_page=100, **{"sort[updatedAt]": 1}).json()
    got = [instant(r["updatedAt"]) for r in desc["data"]]
    assert got == sorted(got, reverse=True) and got[0] == stamps[-1]

    asc = get(sb, "base", "/api/eam/assets", per_page=100, **{"sort[updatedAt]": 0}).json()
    assert [instant(r["updatedAt"]) for r in asc["data"]] == stamps[:100]

    for bad in ("yesterday", "2026-13-01T00:00:00Z", ""):
        r = get(sb, "base", "/api/eam/assets", **{"filter[updatedAt:gteq]": bad})
        assert r.status_code == 400 and error_code(r) == "INVALID_REQUEST"
    assert get(sb, "base", "/api/eam/assets", **{"sort[updatedAt]": 2}).status_code == 400


def _bulk_group(sb: SandboxHandle, token: str) -> tuple[str, int]:
    stamp, size = Counter(r["updatedAt"] for r in sb.truth(token, "assets")).most_common(1)[0]
    return stamp, size


def _tie_keys(sb: SandboxHandle, token: str, stamp: str) -> list[str]:
    end = (instant(stamp) + timedelta(seconds=1)).isoformat()
    body = get(
        sb,
        token,
        "/api/eam/assets",
        per_page=100,
        **{"filter[updatedAt:gteq]": stamp, "filter[updatedAt:lt]": end},
    ).json()
    return [r["key"] for r in body["data"]]


def test_ties_stable_versus_shuffled(sb: SandboxHandle) -> None:
    stable = new_conn(sb, sizes={"assets": 400})
    stamp, size = _bulk_group(sb, stable)
    assert size > 100  # the generated bulk import is bigger than a page
    first = _tie_keys(sb, stable, stamp)
    assert first == sorted(first) and _tie_keys(sb, stable, stamp) == first

    shuffled = new_conn(sb, sizes={"assets": 400}, tie_order="shuffled")
    orders = [_tie_keys(sb, shuffled, stamp) for _ in range(3)]
    assert len({tuple(o) for o in orders}) == 3
    # A page boundary inside the group splits it differently each time.
    assert len({frozenset(o) for o in orders}) > 1


def test_same_seed_same_data_in_another_process(sb: SandboxHandle) -> None:
    with running_sandbox(CONFIG) as other:
        for entity in ("assets", "work-orders"):
            assert other.truth("base", entity) == sb.truth("base", entity)
        ours = get(sb, "base", "/api/eam/assets", page=2, per_page=50).json()["data"]
        theirs = get(other, "base", "/api/eam/assets", page=2, per_page=50).json()["data"]
        assert ours == theirs


# --- mutations --------------------------------------------------------------------


def test_mutation_batch_moves_records_and_bulk_imports(sb: SandboxHandle) -> None:
    token = new_conn(sb, sizes={"assets": 200})
    before = {r["key"]: r for r in sb.truth(token, "assets")}
    changes = sb.mutate(
        token, updates=5, deletes=2, inserts=3, bulk_import=150, entities=["assets"]
    )["assets"]
    assert len(changes["updated"]) == 5 and len(changes["deleted"]) == 2
    assert len(changes["inserted"]) == 3 and len(changes["bulk"]) == 150
    after = {r["key"]: r for r in sb.truth(token, "assets")}
    assert len(after) == 200 + 3 + 150
    newest_before = max(instant(r["updatedAt"]) for r in before.values())
    for key in changes["updated"] + changes["deleted"]:
        assert instant(after[key]["updatedAt"]) > instant(before[key]["updatedAt"])
        assert instant(after[key]["updatedAt"]) > newest_before
    for key in changes["deleted"]:
        assert after[key]["deletedAt"] == after[key]["updatedAt"]
    assert {after[k]["updatedAt"] for k in changes["bulk"]} == {changes["bulk_updatedAt"]}

    # Changed records moved to the end of the ascending order; deleted ones stay listed.
    listed: list[str] = []
    for page in range(1, 5):
        body = get(sb, token, "/api/eam/assets", page=page, per_page=100).json()
        listed += [r["key"] for r in body["data"]]
    changed = {k for kind in ("updated", "deleted", "inserted", "bulk") for k in changes[kind]}
    assert len(listed) == 353 and set(listed[-len(changed) :]) == changed
    bulk = _tie_keys(sb, token, changes["bulk_updatedAt"])
    assert len(bulk) == 100  # a full page, and more of the same instant behind it


def test_naive_page_number_paging_misses_records_during_mutations(sb: SandboxHandle) -> None:
    token = new_conn(
        sb,
        sizes={"assets": 400},
        mutation={"every_requests": 1, "updates": 10, "entities": ["assets"]},
    )
    existing = {r["key"] for r in sb.truth(token, "assets")}
    seen: list[str] = []
    with sb.api(token) as client:
        page = 1
        while True:
            body = client.get("/api/eam/assets", params={"page": page, "per_page": 50}).json()
            seen += [r["key"] for r in body["data"]]
            if body["links"]["next"] is None:
                break
            page += 1
    missed = existing - set(seen)
    assert missed, "mutation mode should make naive paging skip records"
    assert len(seen) > len(set(seen))  # and see moved ones twice


def test_time_driven_mutation(sb: SandboxHandle) -> None:
    token = new_conn(sb, mutation={"every_seconds": 0.2, "inserts": 1, "entities": ["vendors"]})
    initial = len(sb.truth(token, "vendors"))
    time.sleep(0.7)
    assert len(sb.truth(token, "vendors")) >= initial + 2


# --- fault scenarios --------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "status", "code"),
    [
        ({"name": "offline"}, 503, "CONNECTION_OFFLINE"),
        ({"name": "forbidden"}, 403, "PERMISSION_DENIED"),
        ({"name": "not_supported"}, 404, "ENTITY_NOT_SUPPORTED"),
        ({"name": "flaky", "p": 1.0}, 500, "INTERNAL_ERROR"),
        ({"name": "source_timeout"}, 504, "SOURCE_TIMEOUT"),
    ],
)
def test_json_error_scenarios(
    sb: SandboxHandle, scenario: dict[str, Any], status: int, code: str
) -> None:
    token = new_conn(sb, scenarios=[scenario])
    r = get(sb, token, "/api/eam/assets")
    assert r.status_code == status and error_code(r) == code


def test_offline_status_endpoint(sb: SandboxHandle) -> None:
    token = new_conn(sb, scenarios=[{"name": "offline"}])
    assert get(sb, token, "/api/integrations/current").status_code == 503
    answering = new_conn(sb, scenarios=[{"name": "offline", "status_ok": True}])
    status = get(sb, answering, "/api/integrations/current").json()["data"]
    assert status["sync_status"] == "error"
    assert get(sb, answering, "/api/eam/sites").status_code == 503


def test_entity_scoped_scenarios_combine(sb: SandboxHandle) -> None:
    token = new_conn(
        sb,
        scenarios=[
            {"name": "slow", "latency_ms": 150},
            {"name": "forbidden", "entity": "work-orders"},
            {"name": "not_supported", "entity": "purchase-orders"},
            {"name": "slow", "latency_ms": 100, "entity": "assets"},
        ],
    )
    started = time.monotonic()
    assert get(sb, token, "/api/eam/assets").status_code == 200
    assert time.monotonic() - started >= 0.25  # both slow scenarios add up
    assert error_code(get(sb, token, "/api/eam/work-orders")) == "PERMISSION_DENIED"
    assert error_code(get(sb, token, "/api/eam/purchase-orders")) == "ENTITY_NOT_SUPPORTED"
    assert get(sb, token, "/api/integrations/current").status_code == 200


def test_scenario_time_window(sb: SandboxHandle) -> None:
    token = new_conn(sb, scenarios=[{"name": "offline", "after_s": 0.4, "for_s": 0.4}])
    assert get(sb, token, "/api/eam/sites").status_code == 200
    time.sleep(0.45)
    assert get(sb, token, "/api/eam/sites").status_code == 503
    time.sleep(0.4)
    assert get(sb, token, "/api/eam/sites").status_code == 200


def test_html_502_not_json_no_data_truncated(sb: SandboxHandle) -> None:
    r = get(sb, new_conn(sb, scenarios=[{"name": "html_502"}]), "/api/eam/sites")
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
    assert "<html>" in r.text

    r = get(sb, new_conn(sb, scenarios=[{"name": "not_json"}]), "/api/eam/sites")
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        r.json()

    r = get(sb, new_conn(sb, scenarios=[{"name": "no_data"}]), "/api/eam/sites")
    assert r.status_code == 200 and "data" not in r.json()

    r = get(sb, new_conn(sb, scenarios=[{"name": "truncated"}]), "/api/eam/sites")
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
    with pytest.raises(json.JSONDecodeError):
        r.json()


@pytest.mark.parametrize("variant", ["missing_key", "bad_updated_at"])
def test_bad_record_in_good_page(sb: SandboxHandle, variant: str) -> None:
    token = new_conn(sb, scenarios=[{"name": "bad_record", "variant": variant}])
    for page in (1, 2):
        data = get(sb, token, "/api/eam/sites", page=page, per_page=10).json()["data"]
        good = [r for r in data if "key" in r and r["updatedAt"].endswith("Z")]
        assert len(data) == 10 and len(good) == 9
    # The truth is untouched.
    assert all("key" in r for r in sb.truth(token, "sites"))

    once = new_conn(sb, scenarios=[{"name": "bad_record", "every_page": False}])
    pages = [get(sb, once, "/api/eam/sites", page=p, per_page=10).json()["data"] for p in (1, 2)]
    assert sum(1 for page in pages for r in page if "key" not in r) == 1


def test_trickle_never_finishes_in_time(sb: SandboxHandle) -> None:
    token = new_conn(sb, scenarios=[{"name": "trickle", "bytes_per_second": 1}])
    with sb.api(token, timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            client.get("/api/eam/sites")
        assert time.monotonic() - started < 3

    # Faster than the read timeout, a trickle defeats per-read timeouts: only a
    # total deadline stops it.
    fast = new_conn(sb, scenarios=[{"name": "trickle", "bytes_per_second": 20}])
    with sb.api(fast, timeout=0.5) as client, client.stream("GET", "/api/eam/sites") as r:
        assert r.status_code == 200
        received = 0
        deadline = time.monotonic() + 1.0
        for chunk in r.iter_raw():
            received += len(chunk)
            if time.monotonic() > deadline:
                break
        assert 0 < received < int(r.headers["content-length"])


@pytest.mark.parametrize("reset", [False, True])
def test_disconnect_without_answer(sb: SandboxHandle, reset: bool) -> None:
    token = new_conn(sb, scenarios=[{"name": "disconnect", "reset": reset}])
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        get(sb, token, "/api/eam/sites")


def test_auth_fail_from_kth_list_request_until_rotated(sb: SandboxHandle) -> None:
    token = new_conn(sb, scenarios=[{"name": "auth_fail_from_page", "page": 3}])
    with sb.api(token) as client:
        assert client.get("/api/eam/sites").status_code == 200
        assert client.get("/api/eam/assets").status_code == 200
        assert client.get("/api/integrations/current").status_code == 200
        r = client.get("/api/eam/sites", params={"page": 1})
        assert r.status_code == 401 and error_code(r) == "AUTHENTICATION_FAILED"
        assert client.get("/api/eam/users").status_code == 401
        status = client.get("/api/integrations/current").json()["data"]
        assert status["sync_status"] == "fail"
    assert sb.connection(token)["auth_failed"] is True

    sb.rotate(token, f"{token}-new")
    assert get(sb, token, "/api/eam/sites").status_code == 401  # old token is gone
    with sb.api(f"{token}-new") as client:
        for _ in range(4):
            assert client.get("/api/eam/sites").status_code == 200
        assert client.get("/api/integrations/current").json()["data"]["sync_status"] == "done"


def test_rate_limit_retry_after_seconds_and_window(sb: SandboxHandle) -> None:
    token = new_conn(sb, scenarios=[{"name": "rate_limit", "every": 3, "retry_after_s": 1}])
    with sb.api(token) as client:
        assert [client.get("/api/eam/sites").status_code for _ in range(2)] == [200, 200]
        limited = client.get("/api/eam/assets")
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        assert error_code(limited) == "RATE_LIMIT_EXCEEDED"
        inside = client.get("/api/integrations/current")  # any path, same connection
        assert inside.status_code == 429 and inside.headers["retry-after"] == "1"
        time.sleep(1.05)
        assert client.get("/api/eam/sites").status_code == 200
    stats = sb.token_stats(token)
    assert stats["inside_retry_after"] == 1 and stats["by_status"]["429"] == 2
    assert [r["inside_retry_after"] for r in stats["requests"]] == [False] * 3 + [True, False]


def test_rate_limit_retry_after_as_http_date(sb: SandboxHandle) -> None:
    token = new_conn(
        sb, scenarios=[{"name": "rate_limit", "every": 1, "retry_after_s": 2, "as_date": True}]
    )
    r = get(sb, token, "/api/eam/sites")
    assert r.status_code == 429
    until = parsedate_to_datetime(r.headers["retry-after"])
    now = datetime.now(UTC)
    assert now < until <= now + timedelta(seconds=3)
    again = get(sb, token, "/api/eam/sites")
    assert again.status_code == 429 and again.headers["retry-after"] == r.headers["retry-after"]


# --- control API and stats ----------------------------------------------------------


def test_stats_count_requests(sb: SandboxHandle) -> None:
    token = new_conn(sb)
    sb.reset_stats()
    get(sb, token, "/api/eam/sites")
    get(sb, token, "/api/eam/sites", per_page=0)
    get(sb, token, "/api/integrations/current")
    stats = sb.token_stats(token)
    assert stats["total"] == 3
    assert stats["by_entity"] == {"sites": 2}
    assert stats["by_status"] == {"200": 2, "422": 1}
    assert stats["by_path_status"]["/api/eam/sites 422"] == 1
    times = [r["t"] for r in stats["requests"]]
    assert times == sorted(times) and all(r["wall"].endswith("Z") for r in stats["requests"])
    sb.reset_stats()
    assert sb.token_stats(token)["total"] == 0


def test_set_scenarios_restarts_and_control_errors(sb: SandboxHandle) -> None:
    token = new_conn(sb, scenarios=[{"name": "offline"}])
    assert get(sb, token, "/api/eam/sites").status_code == 503
    sb.set_scenarios(token, [])
    assert get(sb, token, "/api/eam/sites").status_code == 200
    control = httpx.Client(base_url=sb.url)
    assert control.get("/_sandbox/health").json() == {"status": "ok"}
    bad = control.put("/_sandbox/connections/x", json={"scenarios": [{"name": "typo"}]})
    assert bad.status_code == 400
    assert control.post("/_sandbox/connections/ghost/mutate", json={}).status_code == 404
    assert control.get("/_sandbox/connections/base/records/spaceships").status_code == 400
    control.close()


def test_a_connections_latency_applies_to_every_list_page() -> None:
    import time as _time

    config = {"connections": {"slow-token": {"seed": 1, "default_size": 5, "latency_ms": 300}}}
    with running_sandbox(config=config) as sb, sb.api("slow-token") as api:
        started = _time.monotonic()
        assert api.get("/api/eam/assets").status_code == 200
        assert _time.monotonic() - started >= 0.3
        started = _time.monotonic()
        assert api.get("/api/integrations/current").status_code == 200
        assert _time.monotonic() - started < 0.3  # the status endpoint is not a list page
