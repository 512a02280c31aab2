"""Odd records reach the store, or its quarantine, on SQLite and PostgreSQL alike.

Each class of docs/records.md is decoded from a page body and committed with
good neighbours: the page commits, the neighbours land, and what the store
holds is what the docs promise, the same on both backends.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from worker.settings import Settings
from worker.store import Connection, PageCommit, Run, RunStatus, SqlStore, open_store
from worker.sync.records import split_records
from worker.timeutil import NULL_DATE, utc_now
from worker.upstream.client import PageQuery, UpstreamClient
from worker.upstream.pagebody import parse_list_body

pytestmark = pytest.mark.integration

AT = b'"updatedAt":"2026-11-20T08:00:00Z"'
ODD: dict[str, bytes] = {
    "nul": b'{"key":"nul",' + AT + b',"name":"Pump\\u00007","note":"a\x00b"}',
    "nan": b'{"key":"nan",' + AT + b',"cost":NaN,"lat":Infinity,"lng":-Infinity}',
    "huge": b'{"key":"huge",' + AT + b',"n":' + b"9" * 5000 + b',"f":1e400,"g":1e-400}',
    "numeric": b'{"key":"numeric",' + AT + b',"n":1e200000}',
    "surrogate": b'{"key":"surrogate",' + AT + b',"name":"\\ud800"}',
    "sentinel": b'{"key":"sentinel","updatedAt":"0001-01-01T00:00:00+01:00"}',
    "deleted-sentinel": b'{"key":"deleted-sentinel",'
    + AT
    + b',"deletedAt":"0001-01-01T00:00:00Z"}',
    "offset": b'{"key":"offset","updatedAt":"2026-11-20T09:00:00+01:00"}',
    "ancient": b'{"key":"ancient","updatedAt":"0999-05-01T00:00:00Z"}',
    "nested": b'{"key":"nested",' + AT + b',"v":' + b"[" * 200 + b"]" * 200 + b"}",
    "big": b'{"key":"big",' + AT + b',"blob":"' + b"x" * 2_000_000 + b'"}',
    # quarantined:
    "utf8": b'{"key":"utf8",' + AT + b',"name":"M\xfcller"}',
    "deep": b'{"key":"deep",' + AT + b',"v":' + b"[" * 300 + b"]" * 300 + b"}",
    "invalid": b'{"key":"invalid",' + AT + b',"v":tru}',
    "overflow": b'{"key":"overflow","updatedAt":"9999-12-31T23:00:00-05:00"}',
}
QUARANTINED = {"utf8", "deep", "invalid", "overflow"}


@pytest.fixture
def store(store_url: str) -> SqlStore:
    store = open_store(store_url)
    store.add_connection(Connection(id="c1", name="Acme", entity_types=("assets",)))
    run = Run(
        id="run-1",
        connection_id="c1",
        entity_type="assets",
        status=RunStatus.RUNNING,
        started_at=utc_now(),
    )
    store.start_run(run)
    return store


def _commit(store: SqlStore, body: bytes) -> None:
    good, bad = split_records(parse_list_body(body).records)
    store.commit_page(PageCommit("c1", "assets", "run-1", tuple(good), tuple(bad), "x"))


def _body(*records: bytes) -> bytes:
    return b'{"data":[' + b",".join(records) + b'],"meta":{"total":1}}'


def _quarantine(store: SqlStore) -> dict[str | None, tuple[str, str]]:
    rows = store._read("SELECT record_key, reason, raw FROM quarantine ORDER BY record_key")
    return {row[0]: (row[1], row[2]) for row in rows}


def test_each_odd_record_is_stored_or_quarantined_and_its_page_commits(store: SqlStore) -> None:
    good = [b'{"key":"good-%d",%s,"name":"fine"}' % (i, AT) for i in range(3)]
    _commit(store, _body(good[0], *ODD.values(), good[1], good[2]))
    stored = {r.key: r for r in store.records("c1", "assets")}
    assert set(stored) == {"good-0", "good-1", "good-2", *ODD} - QUARANTINED
    quarantine = _quarantine(store)
    # A record that does not decode has no key to name it by; its raw text does.
    assert set(quarantine) == QUARANTINED - {"invalid"} | {None}
    for key in QUARANTINED:
        reason, raw = quarantine[None if key == "invalid" else key]
        assert reason and f'"key":"{key}"' in raw

    def data(key: str) -> dict[str, Any]:
        return stored[key].data

    assert data("nul") == {"key": "nul", "updatedAt": "2026-11-20T08:00:00Z", "name": "Pump\ufffd7",
                           "note": "a\ufffdb"}  # fmt: skip
    assert stored["nul"].raw == ODD["nul"].decode().replace("\x00", "\\x00")
    assert (data("nan")["cost"], data("nan")["lat"], data("nan")["lng"]) == (None, None, None)
    assert stored["nan"].raw == ODD["nan"].decode()
    assert data("huge")["n"] == Decimal("9" * 5000) and stored["huge"].raw is None
    assert data("numeric")["n"] is None and stored["numeric"].raw == ODD["numeric"].decode()
    assert data("surrogate")["name"] == "\ufffd" and "\\ud800" in (stored["surrogate"].raw or "")
    assert stored["sentinel"].updated_at == NULL_DATE
    assert data("sentinel")["updatedAt"] == "0001-01-01T00:00:00+01:00"
    assert stored["deleted-sentinel"].deleted_at is None
    assert stored["offset"].updated_at == "2026-11-20T08:00:00.000000Z"
    assert stored["ancient"].updated_at == "0999-05-01T00:00:00.000000Z"
    assert len(json.dumps(data("nested"))) > 400 and stored["nested"].raw is None
    assert len(data("big")["blob"]) == 2_000_000
    assert "\\xfc" in quarantine["utf8"][1]
    for key in ("good-0", "offset", "sentinel", "huge", "nested", "big"):
        assert stored[key].raw is None, key


def test_a_page_of_only_nul_and_nan_records_commits_on_both_stores(store: SqlStore) -> None:
    # On PostgreSQL, main stopped the whole connection on these two.
    _commit(store, _body(ODD["nul"], ODD["nan"]))
    assert {r.key for r in store.records("c1", "assets")} == {"nul", "nan"}


def test_years_below_1000_keep_text_order_so_a_newer_update_wins(store: SqlStore) -> None:
    def version(at: str, name: str) -> bytes:
        return b'{"key":"old","updatedAt":"%s","name":"%s"}' % (at.encode(), name.encode())

    _commit(store, _body(version("0999-05-01T00:00:00Z", "v1")))
    _commit(store, _body(version("1000-01-01T00:00:00Z", "v2")))  # dropped on main
    _commit(store, _body(version("0998-01-01T00:00:00Z", "v0")))  # older: must not win
    [record] = store.records("c1", "assets")
    assert record.data["name"] == "v2" and record.updated_at == "1000-01-01T00:00:00.000000Z"


def test_a_real_update_replaces_a_null_date_version(store: SqlStore) -> None:
    _commit(store, _body(ODD["sentinel"]))
    _commit(store, _body(b'{"key":"sentinel","updatedAt":"1999-01-01T00:00:00Z","v":2}'))
    [record] = store.records("c1", "assets")
    assert record.data["v"] == 2 and record.raw is None


def test_an_exact_update_clears_the_raw_text_of_an_escaped_one(store: SqlStore) -> None:
    _commit(store, _body(ODD["nan"]))
    _commit(store, _body(b'{"key":"nan","updatedAt":"2026-11-21T00:00:00Z","cost":1.5}'))
    [record] = store.records("c1", "assets")
    assert record.data["cost"] == 1.5 and record.raw is None


# -- issue 11's reproductions, through the APIs main already had ----------------
# Each of these fails on main: the page is refused (BadResponse), check_record
# raises OverflowError, or PostgreSQL refuses the commit.


@contextmanager
def serving(body: bytes) -> Iterator[str]:
    """A local HTTP server answering every request with ``body`` as a list page."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("surrogate", True),
        ("huge", True),
        ("utf8", False),
        ("deep", False),
        ("nul", True),
        ("nan", True),
        ("sentinel", True),
    ],
)
def test_one_odd_record_no_longer_rejects_its_page(
    store: SqlStore, name: str, stored: bool
) -> None:
    good = b'{"key":"good",' + AT + b"}"
    client = UpstreamClient(settings=Settings())
    try:
        with serving(_body(good, ODD[name])) as url:
            page = client.list_page(url, "token", "assets", PageQuery())
    finally:
        client.close()
    good_rows, bad_rows = split_records(page.records)
    store.commit_page(PageCommit("c1", "assets", "run-1", tuple(good_rows), tuple(bad_rows), "x"))
    keys = {r.key for r in store.records("c1", "assets")}
    assert keys == ({"good", name} if stored else {"good"})
    assert [k for k, _ in store.quarantined("c1", "assets")] == ([] if stored else [name])


def test_nul_and_nan_records_decoded_elsewhere_commit_on_both_stores(store: SqlStore) -> None:
    items = [
        {"key": "nul", "updatedAt": "2026-11-20T08:00:00Z", "name": "Pump\x007"},
        {"key": "nan", "updatedAt": "2026-11-20T08:00:00Z", "cost": float("nan")},
        {"key": "sentinel", "updatedAt": "0001-01-01T00:00:00+01:00"},
        {"key": "ancient", "updatedAt": "0999-05-01T00:00:00Z"},
    ]
    good, bad = split_records(items)
    assert not bad
    store.commit_page(PageCommit("c1", "assets", "run-1", tuple(good), (), "x"))
    stored = {r.key: r for r in store.records("c1", "assets")}
    assert stored["nul"].data["name"] == "Pump\ufffd7" and stored["nan"].data["cost"] is None
    assert stored["sentinel"].updated_at == NULL_DATE
    assert stored["ancient"].updated_at == "0999-05-01T00:00:00.000000Z"
