"""The health dashboard over real HTTP: JSON, /metrics, read-only, loopback, headless Chromium.

The store is filled directly and the breakers are put in their states in the
real test Redis, so every colour of the grid is on the page at once.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from scripts.dashboard_screenshot import (
    add_run,
    dump_dom,
    find_chromium,
    screenshot,
    seed_fleet,
)
from scripts.dashboard_screenshot import seed as seed_demo
from tests.support import REDIS_URL, ROOT, Env
from worker.events import Event
from worker.ops.dashboard import metrics as exposition
from worker.ops.dashboard.server import Dashboard, DashboardServer
from worker.resilience.breaker import Breaker, Outcome
from worker.settings import Settings
from worker.store import (
    Connection,
    ParkedJob,
    Run,
    RunStatus,
    SqlStore,
    TransitionRecord,
    open_store,
)
from worker.store.models import FullReadVerdict
from worker.timeutil import utc_now

pytestmark = pytest.mark.integration

XSS_NAME = '<script>document.title="pwned"</script><img src=x onerror="document.body.id=1">'
XSS_ERROR = '</script><b onmouseover="alert(1)">bold</b>'
# One pair per state; "stale" is healthy with a success four hours old.
EXPECTED = {
    ("fine", "assets"): ("healthy", False),
    ("fine", "sites"): ("healthy", False),
    ("slow", "assets"): ("healthy", True),
    ("daily", "assets"): ("healthy", False),  # same age, but it syncs once a day
    ("limited", "assets"): ("paused", False),
    ("revoked", "assets"): ("halted", False),
    ("mixed", "assets"): ("open", False),
    ("mixed", "work-orders"): ("half-open", False),
    ("mixed", "vendors"): ("blocked", False),
    ("mixed", "users"): ("healthy", False),
}


@dataclass
class Fleet:
    store: SqlStore
    breaker: Breaker
    server: DashboardServer

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        return request(self.server, "GET", path, headers=headers)


def request(
    server: DashboardServer, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = server.server_address[0], server.server_address[1]
    conn = http.client.HTTPConnection(str(host), port, timeout=10)
    try:
        conn.request(method, path, body=b"{}" if method == "POST" else None, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def seed(store: SqlStore, breaker: Breaker) -> None:
    """The fleet of EXPECTED, plus history for the metrics."""
    connections = {
        "fine": ("Fine Plant", ("assets", "sites"), None),
        "slow": (XSS_NAME, ("assets",), None),
        "daily": ("Daily Depot", ("assets",), 86_400),
        "limited": ("Limited Ltd", ("assets",), None),
        "revoked": ("Revoked Inc", ("assets",), None),
        "mixed": ("Mixed Works", ("assets", "work-orders", "vendors", "users"), None),
    }
    for cid, (name, entity_types, interval) in connections.items():
        store.add_connection(
            Connection(id=cid, name=name, entity_types=entity_types, sync_interval_s=interval)
        )
        for entity in entity_types:
            old = cid in ("slow", "daily")
            add_run(store, cid, entity, minutes_ago=240 if old else 2, records=3)
    failed = add_run(
        store, "slow", "assets", minutes_ago=1, status="failed", error=("bug", XSS_ERROR)
    )
    breaker.pause("limited", 600, "rate_limited: 429")
    breaker.halt("revoked", "auth: 401")
    breaker.force_open("mixed", "assets", seconds=600, reason="unavailable: 5 in a row")
    breaker.force_open("mixed", "work-orders", seconds=0.05, reason="unavailable: 503")
    time.sleep(0.2)
    assert breaker.admit("mixed", "work-orders").probe  # the probe makes it half-open
    # A complete full read that found none of fine/sites' records: held, not deleted.
    held = uuid.uuid4().hex
    store.start_run(Run(held, "fine", "sites", RunStatus.RUNNING, utc_now(), full=True))
    store.finish_run(held, RunStatus.SUCCEEDED, verdict=FullReadVerdict(incomplete=None))
    breaker.block("mixed", "vendors", "permission: 403")
    now = utc_now()
    for entity, from_state, to_state in [
        (None, "closed", "halted"),
        ("assets", "closed", "open"),
        ("assets", "closed", "open"),
        ("work-orders", "open", "half_open"),
    ]:
        cid = "revoked" if entity is None else "mixed"
        store.record_transition(
            TransitionRecord(cid, entity, from_state, to_state, "test", None, now)
        )
    for event_type in ("connection.reauthorization_required", "entity.access_lost"):
        store.add_event(
            Event(
                id=uuid.uuid4().hex,
                type=event_type,
                connection_id="revoked" if event_type.startswith("connection") else "mixed",
                entity_type=None if event_type.startswith("connection") else "vendors",
                created_at=now,
                body_json="{}",
            )
        )
    store.park_job(ParkedJob("slow", "assets", failed, now, "open breaker", "{}"))


@pytest.fixture
def fleet(test_redis: redis.Redis, store_url: str) -> Iterator[Fleet]:
    store = open_store(store_url)
    breaker = Breaker(client=redis.Redis.from_url(REDIS_URL))
    seed(store, breaker)
    server = DashboardServer("127.0.0.1", 0, Dashboard(store, breaker, 900.0, cache_s=0)).start()
    yield Fleet(store, breaker, server)
    server.close()


def cells_of(body: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (row["id"], cell["entity_type"]): cell
        for row in body["connections"]
        for cell in row["cells"]
    }


def test_status_json_joins_store_and_breakers(fleet: Fleet) -> None:
    status, headers, raw = fleet.get("/api/status")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert b"<" not in raw and b">" not in raw, "markup characters are escaped even in JSON"
    body = json.loads(raw)
    cells = cells_of(body)
    assert {pair: (c["state"], c["stale"]) for pair, c in cells.items()} == EXPECTED
    assert body["redis_ok"] is True and body["stale_after_intervals"] == 3
    assert body["counts"]["stale"] == 1 and body["counts"]["healthy"] == 5
    slow = cells[("slow", "assets")]
    assert 4 * 3600 - 120 < slow["lag_s"] < 4 * 3600 + 120
    assert slow["last_error"] == XSS_ERROR and slow["last_error_kind"] == "bug"
    assert slow["parked_reason"] == "open breaker" and slow["records"] == 3
    assert cells[("fine", "assets")]["lag_s"] < 200
    assert cells[("limited", "assets")]["until"] > body["generated_at"]
    assert cells[("mixed", "assets")]["reason"] == "unavailable: 5 in a row"
    rows = {row["id"]: row for row in body["connections"]}
    assert rows["slow"]["name"] == XSS_NAME
    assert rows["daily"]["interval_s"] == 86_400 and rows["fine"]["interval_s"] == 900
    assert body["entity_types"] == ["sites", "assets", "work-orders", "vendors", "users"]
    assert cells[("fine", "sites")]["held_deletions"] == 3
    assert "whole pair" not in body["held_notice"] and body["held_notice"].startswith(
        "3 deletions held on 1 pair(s)"
    )
    assert "3 of 3 live records" in cells[("fine", "sites")]["reconcile_note"]


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample, read by prometheus_client's own parser (which fails on a bad line)."""
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.type in ("counter", "gauge") and family.documentation, family.name
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def test_metrics_parse_and_add_up(fleet: Fleet) -> None:
    status, headers, raw = fleet.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parse_metrics(raw.decode())
    # The fast writer and prometheus_client's own exposition agree byte for byte.
    snapshot = fleet.server.dashboard.snapshot()
    registry = exposition.registry_for(lambda: snapshot)
    assert exposition.render(exposition.families(*snapshot)) == exposition.render_reference(
        registry
    )

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    def names(name: str) -> list[dict[str, str]]:
        return [dict(labels) for (found, labels) in samples if found == name]

    pair = {"connection": "slow", "entity_type": "assets"}
    assert value("entity_sync_redis_up") == 1
    assert value("entity_sync_records", **pair, status="live") == 3
    assert names("entity_sync_held_deletions") == [{"connection": "fine", "entity_type": "sites"}]
    assert value("entity_sync_held_deletions", connection="fine", entity_type="sites") == 3
    assert ("entity_sync_records", frozenset({**pair, "status": "deleted"}.items())) not in samples
    assert value("entity_sync_pairs", state="stale") == 1
    assert value("entity_sync_pairs", state="healthy") == 5
    assert value("entity_sync_freshness_lag_seconds", **pair) > 4 * 3600 - 120
    halted = {"connection": "revoked", "entity_type": "assets", "state": "halted"}
    assert value("entity_sync_pair_state", **halted) == 1
    # One state per pair: only the current one is written.
    assert len(names("entity_sync_pair_state")) == len(EXPECTED)
    assert value("entity_sync_runs_total", connection="slow", status="succeeded") == 1
    assert value("entity_sync_runs_total", connection="slow", status="failed") == 1
    assert value("entity_sync_runs_total", connection="mixed", status="succeeded") == 4
    assert value("entity_sync_run_failures_total", connection="slow", kind="bug") == 1
    assert value("entity_sync_records_written_total", connection="slow") == 3
    assert value("entity_sync_upstream_pages_total", connection="slow") == 1
    transition = {"connection": "mixed", "level": "entity_type", "from": "closed", "to": "open"}
    assert value("entity_sync_breaker_transitions_total", **transition) == 2
    halt = {"connection": "revoked", "level": "connection", "from": "closed", "to": "halted"}
    assert value("entity_sync_breaker_transitions_total", **halt) == 1
    assert value("entity_sync_events", type="entity.access_lost", status="pending") == 1
    assert value("entity_sync_parked_jobs", connection="slow") == 1
    assert names("entity_sync_parked_jobs") == [{"connection": "slow"}]
    assert value("entity_sync_sync_interval_seconds", connection="daily") == 86_400
    # The admitted half-open probe has no outcome yet: no request in any window.
    assert names("entity_sync_breaker_window_requests") == []


def documented_families() -> dict[str, tuple[str, set[str]]]:
    """docs/operating.md's table of metric families: name -> (type, label names)."""
    text = (ROOT / "docs" / "operating.md").read_text()
    table = text[text.index("| family | type | labels |") :].split("\n\n", 1)[0]
    found = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        labels = {label.strip("` ") for label in cells[2].split(",") if label.strip("` -")}
        found[cells[0].strip("`")] = (cells[1], labels)
    return found


def test_metrics_match_the_families_the_docs_document(fleet: Fleet) -> None:
    fleet.breaker.record(fleet.breaker.admit("fine", "assets"), outcome=Outcome.ok())
    fleet.store.start_run(Run("going", "fine", "sites", RunStatus.RUNNING, utc_now()))
    documented = documented_families()
    assert len(documented) >= 15
    text = fleet.get("/metrics")[2].decode()
    exported = {
        # The parser names a counter family without the _total its samples carry.
        family.name + ("_total" if family.type == "counter" else ""): family
        for family in text_string_to_metric_families(text)
    }
    assert set(exported) == set(documented), "every family in docs/operating.md, and only those"
    for name, (kind, labels) in documented.items():
        family = exported[name]
        assert family.type == kind, name
        assert family.samples, f"{name} has no sample in a fleet with one of each"
        for sample in family.samples:
            assert set(sample.labels) == labels, (name, sample.labels)
    requests = {
        s.labels["outcome"]: s.value
        for s in exported["entity_sync_breaker_window_requests"].samples
        if s.labels["connection"] == "fine"
    }
    assert requests == {"success": 1, "failure": 0}


def test_read_only_and_safe_headers(fleet: Fleet) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PURGE"):
        status, headers, body = request(fleet.server, method, "/api/status")
        assert status == 405, method
        assert headers["Allow"] == "GET, HEAD" and b"read-only" in body
    status, headers, body = request(fleet.server, "HEAD", "/")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000
    status, headers, page = fleet.get("/")
    assert "script-src 'sha256-" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert b"http://" not in page and b"https://" not in page, "no CDN, no external fonts"
    assert b"Fine Plant" not in page, "the page holds no data; its script fetches it"
    assert fleet.get("/healthz")[:1] == (200,)
    assert fleet.get("/nope")[:1] == (404,)
    assert fleet.get("/api/status", Host="evil.example:8901")[0] == 403, "DNS rebinding"
    assert fleet.get("/api/status", Host="localhost:8901")[0] == 200


def test_redis_unreachable_shows_unknown(test_redis: redis.Redis, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    store.add_connection(Connection(id="c1", name="C1", entity_types=("assets",)))
    away = Breaker(client=redis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.3))
    server = DashboardServer("127.0.0.1", 0, Dashboard(store, away, 900.0)).start()
    try:
        body = json.loads(request(server, "GET", "/api/status")[2])
        metrics = parse_metrics(request(server, "GET", "/metrics")[2].decode())
    finally:
        server.close()
    assert body["redis_ok"] is False
    assert [c["state"] for c in cells_of(body).values()] == ["unknown"]
    assert cells_of(body)[("c1", "assets")]["never_synced"] is True
    assert metrics[("entity_sync_redis_up", frozenset())] == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def start_cli(env: Env, *args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.ops.cli", "dashboard", *args],
        env=env.process_env(),
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    lines = []
    for _ in range(5):
        lines.append(proc.stderr.readline())
        if "dashboard (read-only) at" in lines[-1]:
            return proc, "".join(lines)
    proc.kill()
    raise AssertionError(f"the dashboard did not start: {''.join(lines)}")


def test_cli_binds_loopback_by_default_and_warns_otherwise(
    test_redis: redis.Redis, tmp_path: Path
) -> None:
    assert Settings().dashboard_host == "127.0.0.1" and Settings().dashboard_port == 8901
    env = Env(store_url=f"sqlite:///{tmp_path}/store.db", upstream_url="http://127.0.0.1:1")
    env.store().add_connection(Connection(id="c1", name="C1", entity_types=("assets",)))
    port = free_port()
    proc, said = start_cli(env, "--port", str(port))
    try:
        assert listening_addresses(port) == {"0100007F"}, "127.0.0.1 only"
        assert "WARNING" not in said
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/status")
        assert json.loads(conn.getresponse().read())["connections"][0]["id"] == "c1"
    finally:
        proc.terminate()
        proc.wait(10)
    exposed_port = free_port()
    proc, said = start_cli(env, "--host", "0.0.0.0", "--port", str(exposed_port))
    try:
        assert "WARNING" in said and "not to loopback" in said
    finally:
        proc.terminate()
        proc.wait(10)


# -- headless Chromium -------------------------------------------------------------------


@pytest.fixture
def chromium() -> str:
    try:
        return find_chromium()
    except RuntimeError as exc:
        pytest.fail(f"{exc} (.ci/run installs it; this test never skips)")


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_page_renders_every_state_in_chromium(chromium: str, fleet: Fleet, tmp_path: Path) -> None:
    dom = dump_dom(fleet.server.url + "#mixed/assets")
    assert 'data-loaded="true"' in dom, "the script fetched api/status and drew the grid"
    cells = re.findall(r'<td class="cell (state-[a-z-]+)([a-z -]*)" data-state="([a-z-]+)"', dom)
    assert len(cells) == len(EXPECTED)
    assert {(css, "stale" in more.split()) for css, more, _ in cells} == {
        (f"state-{state}", stale) for state, stale in EXPECTED.values()
    }
    assert all(css == f"state-{state}" for css, _, state in cells)
    assert dom.count('class="cell none"') == 6 * 5 - len(EXPECTED), "pairs not synced"
    # Customer and upstream strings are text, never markup.
    assert "&lt;script&gt;document.title" in dom and "&lt;/script&gt;&lt;b" in dom
    assert "pwned" not in dom.split("<title>")[1][:40] and '<img src="x"' not in dom
    assert 'id="1"' not in dom and "<b onmouseover" not in dom
    # The click-to-expand panel (opened by the URL fragment) shows the details.
    details = dom.split('id="details"')[1]
    assert "unavailable: 5 in a row" in details and "Last success" in details
    shot = tmp_path / "dashboard.png"
    screenshot(fleet.server.url, shot)
    assert shot.stat().st_size > 10_000


def test_screenshot_script_writes_the_readme_picture(
    chromium: str, test_redis: redis.Redis, tmp_path: Path
) -> None:
    out = tmp_path / "docs" / "dashboard.png"
    script = ROOT / "scripts" / "dashboard_screenshot.py"
    command = [sys.executable, str(script), "--out", str(out), "--redis-url", REDIS_URL]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:4] == b"\x89PNG"


# -- 1,000 connections: problems first, filter, search, pages ------------------------------


def api(server: DashboardServer, query: str) -> dict[str, Any]:
    status, _, raw = request(server, "GET", "/api/status?" + query)
    assert status == 200
    body: dict[str, Any] = json.loads(raw)
    return body


def test_api_puts_problems_first_and_filters_searches_and_pages(fleet: Fleet) -> None:
    for i in range(120):
        fleet.store.add_connection(
            Connection(id=f"zz-{i:03}", name=f"Quiet Yard {i}", entity_types=("assets",))
        )
    whole = json.loads(fleet.get("/api/status")[2])
    order = [row["id"] for row in whole["connections"]]
    # halted, open (and half-open, blocked), paused, failing (and stale), then healthy.
    assert order[:4] == ["revoked", "mixed", "limited", "slow"]
    assert [row["category"] for row in whole["connections"][:4]] == [
        "halted",
        "open",
        "paused",
        "failing",
    ]
    assert order[4:7] == ["daily", "fine", "zz-000"], "then healthy ones, by id"
    assert len(order) == 6 + 120 and "view" not in whole, "no query: the whole grid"

    first = api(fleet.server, "state=all&page=1&per_page=50")
    assert [row["id"] for row in first["connections"]] == order[:50]
    assert first["view"] == {
        "state": "all",
        "q": "",
        "page": 1,
        "pages": 3,
        "per_page": 50,
        "matched": 126,
        "total": 126,
    }
    assert first["filters"]["all"] == 126 and first["filters"]["problems"] == 4
    assert first["filters"]["halted"] == 1 and first["filters"]["blocked"] == 1
    assert first["filters"]["healthy"] == 122 and first["filters"]["unknown"] == 0
    last = api(fleet.server, "page=99&per_page=50")
    assert last["view"]["page"] == 3 and [r["id"] for r in last["connections"]] == order[100:]

    assert [r["id"] for r in api(fleet.server, "state=blocked")["connections"]] == ["mixed"]
    assert [r["id"] for r in api(fleet.server, "state=problems")["connections"]] == order[:4]
    # Search matches the id or the name, in any case, and combines with the filter.
    assert [r["id"] for r in api(fleet.server, "q=PLANT")["connections"]] == ["fine"]
    assert [r["id"] for r in api(fleet.server, "q=zz-11")["connections"]] == [
        f"zz-{i}" for i in range(110, 120)
    ]
    assert api(fleet.server, "q=zz-11&state=halted")["connections"] == []
    # Nonsense in the query string is ignored, never an error.
    odd = api(fleet.server, "state=%3Cscript%3E&page=x&per_page=-4")
    assert odd["view"]["state"] == "all" and odd["view"]["per_page"] == 1


@pytest.fixture
def big_fleet(test_redis: redis.Redis, tmp_path: Path) -> Iterator[DashboardServer]:
    """The screenshot's fleet: the demo's states plus generated connections, 1,000 in all."""
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    breaker = Breaker(client=redis.Redis.from_url(REDIS_URL))
    seed_demo(store, breaker)
    seed_fleet(store, breaker, 1000)
    server = DashboardServer("127.0.0.1", 0, Dashboard(store, breaker, 900.0)).start()
    yield server
    server.close()


def rows_of(dom: str) -> list[tuple[str, str]]:
    """(category, connection id) of each row the page drew."""
    return re.findall(
        r'<tr class="cat-[a-z-]+" data-connection="([^"]+)" data-category="([a-z-]+)"', dom
    )


def test_page_at_1000_connections_in_chromium(chromium: str, big_fleet: DashboardServer) -> None:
    dom = dump_dom(big_fleet.url)
    rows = rows_of(dom)
    assert len(rows) == 50, "one page of 50, not 1,000 rows"
    categories = [category for _, category in rows]
    assert categories[:2] == ["halted", "open"] and rows[0][0] == "globex"
    order = ["halted", "open", "half-open", "blocked", "paused", "failing", "stale", "healthy"]
    assert categories == sorted(categories, key=order.index), "problems first"
    assert "Page 1 of 20" in dom and "of 1000 connections" in dom
    assert re.search(r'data-filter="halted"[^>]*>.*?class="count">1<', dom)

    halted = rows_of(dump_dom(big_fleet.url + "?state=halted"))
    assert halted == [("globex", "halted")]
    paused = rows_of(dump_dom(big_fleet.url + "?state=paused"))
    assert len(paused) == 6 and all(
        cid == "northwind" or cid.startswith("site-") for cid, _ in paused
    )
    found = rows_of(dump_dom(big_fleet.url + "?q=SITE-0042"))
    assert found == [("site-0042", "healthy")]
    last = dump_dom(big_fleet.url + "?page=20")
    assert len(rows_of(last)) == 50 and "Page 20 of 20" in last
    assert 'id="next" disabled' in last, "no page after the last"
