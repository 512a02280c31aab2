"""Every upstream answer is bounded and classified: decoded size, whole deadline,
parse depth, headers at the calendar's edges, tokens a header cannot carry.

Real local servers speak raw HTTP (``raw_server``), so each hostile answer is
exactly what a broken or malicious upstream would send.
"""

from __future__ import annotations

import socket
import time
import zlib
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest

from tests.integration.upstream.test_upstream_edge import Serve, _client, _peak_rss_mb, raw_server
from worker.errors import AuthFailed, BadRequest, BadResponse, RateLimited, Unavailable
from worker.upstream.client import Page, PageQuery

pytestmark = pytest.mark.integration

PAGE = b'{"data": [{"key": "a", "updatedAt": "2026-01-01T00:00:00Z"}], "meta": {"total": 1}}'


@cache
def _bombs() -> tuple[bytes, bytes]:
    """gzip of 400 MB of zeros (about 400 KB), and that gzipped again (under 1 KB)."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * (1 << 20)
    once = b"".join(inner.compress(zeros) for _ in range(400)) + inner.flush()
    outer = zlib.compressobj(9, zlib.DEFLATED, 31)
    return once, outer.compress(once) + outer.flush()


def _gzip(data: bytes) -> bytes:
    engine = zlib.compressobj(6, zlib.DEFLATED, 31)
    return engine.compress(data) + engine.flush()


def _answer(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers, "", ""]
    return "\r\n".join(head).encode() + body


def _fetch(answer: bytes) -> Page:
    """One list request to a server that sends ``answer``."""
    with raw_server(_serving(answer)) as url:
        return _client().list_page(url, "t", "assets", PageQuery())


def _serving(answer: bytes) -> Serve:
    def serve(conn: socket.socket) -> None:
        conn.sendall(answer)

    return serve


# -- decoded size -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "gzip, gzip"])
def test_a_compression_bomb_is_refused_at_the_cap_on_decoded_bytes(encoding: str) -> None:
    once, twice = _bombs()
    body = once if encoding == "gzip" else twice
    assert len(twice) < 1000  # the reproduction: under 1 KB on the wire, 400 MB inflated
    answer = _answer("200 OK", body, f"Content-Encoding: {encoding}")
    before = _peak_rss_mb()
    with raw_server(_serving(answer)) as url, pytest.raises(BadResponse, match="cap"):
        _client(max_response_bytes=1 << 20).list_page(url, "t", "assets", PageQuery())
    assert _peak_rss_mb() - before < 50


def test_a_bomb_in_an_error_body_is_cut_and_the_status_still_decides() -> None:
    _, twice = _bombs()
    answer = _answer("503 Service Unavailable", twice, "Content-Encoding: gzip, gzip")
    before = _peak_rss_mb()
    with raw_server(_serving(answer)) as url, pytest.raises(Unavailable) as caught:
        _client(max_response_bytes=32 << 20).list_page(url, "t", "assets", PageQuery())
    assert caught.value.status == 503
    assert _peak_rss_mb() - before < 50


def test_a_bomb_as_the_status_answer_is_bad_data() -> None:
    _, twice = _bombs()
    answer = _answer("200 OK", twice, "Content-Encoding: gzip, gzip")
    before = _peak_rss_mb()
    with raw_server(_serving(answer)) as url, pytest.raises(BadResponse, match="cap"):
        _client(max_response_bytes=32 << 20).status(url, "t")
    assert _peak_rss_mb() - before < 50


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", _gzip),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send
        ("gzip, gzip", lambda data: _gzip(_gzip(data))),
        ("identity", lambda data: data),
    ],
)
def test_honest_encodings_still_decode(encoding: str, encode: object) -> None:
    assert callable(encode)
    page = _fetch(_answer("200 OK", encode(PAGE), f"Content-Encoding: {encoding}"))
    assert [r.value["key"] for r in page.records] == ["a"]


def test_an_unknown_or_broken_encoding_is_bad_data() -> None:
    with pytest.raises(BadResponse, match="unsupported Content-Encoding"):
        _fetch(_answer("200 OK", PAGE, "Content-Encoding: zstd"))
    with pytest.raises(BadResponse, match="gzip"):
        _fetch(_answer("200 OK", _gzip(PAGE)[:-12], "Content-Encoding: gzip"))


# -- the whole deadline ---------------------------------------------------------------


def test_a_server_that_never_sends_headers_meets_the_deadline() -> None:
    def serve(conn: socket.socket) -> None:
        time.sleep(30)  # accepted, request read, nothing ever sent

    started = time.monotonic()
    with raw_server(serve) as url, pytest.raises(Unavailable, match="deadline"):
        _client(read_timeout=30.0, request_deadline=2.0).list_page(url, "t", "assets", PageQuery())
    assert time.monotonic() - started < 5


def test_a_tls_handshake_that_never_completes_meets_the_deadline() -> None:
    def serve(conn: socket.socket) -> None:
        time.sleep(30)  # the ClientHello was read; no ServerHello ever comes

    started = time.monotonic()
    with raw_server(serve) as url, pytest.raises(Unavailable, match="deadline"):
        client = _client(connect_timeout=30.0, read_timeout=30.0, request_deadline=2.0)
        client.status(url.replace("http://", "https://"), "t")
    assert time.monotonic() - started < 5


def test_trickled_headers_meet_the_deadline() -> None:
    def serve(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(60):
            conn.sendall(b"X-Slow: 1\r\n")  # each read succeeds: no read timeout ever fires
            time.sleep(0.5)

    started = time.monotonic()
    with raw_server(serve) as url, pytest.raises(Unavailable, match="deadline"):
        _client(read_timeout=30.0, request_deadline=2.0).list_page(url, "t", "assets", PageQuery())
    assert time.monotonic() - started < 5


def test_a_connect_that_never_completes_meets_the_deadline() -> None:
    # A listener whose accept queue is full: further connects are never answered.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    port = listener.getsockname()[1]
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            client = _client(connect_timeout=30.0, read_timeout=30.0, request_deadline=2.0)
            client.list_page(f"http://127.0.0.1:{port}", "t", "assets", PageQuery())
        assert time.monotonic() - started < 5
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_a_pooled_connection_is_under_the_next_requests_deadline() -> None:
    served = 0

    def serve(conn: socket.socket) -> None:
        nonlocal served
        conn.sendall(_answer("200 OK", PAGE, "Connection: keep-alive"))
        served += 1
        conn.recv(65536)  # the second request on the same connection: never answered
        time.sleep(30)

    client = _client(read_timeout=30.0, request_deadline=2.0)
    with raw_server(serve) as url:
        client.list_page(url, "t", "assets", PageQuery())
        started = time.monotonic()
        with pytest.raises(Unavailable, match="deadline"):
            client.list_page(url, "t", "assets", PageQuery())
    assert time.monotonic() - started < 5 and served == 1


# -- bounded parsing ------------------------------------------------------------------


def test_a_deeply_nested_error_body_is_classified_by_its_status() -> None:
    body = b'{"error": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(BadRequest, match="without an error body"):
        _fetch(_answer("400 Bad Request", body))


def test_odd_numbers_in_an_error_body_do_not_matter() -> None:
    body = b'{"error": {"code": ' + b"9" * 5000 + b', "message": "slow down"}}'
    with pytest.raises(BadRequest):
        _fetch(_answer("400 Bad Request", body))


def test_a_deeply_nested_status_answer_is_bad_data() -> None:
    body = b'{"data": {"sync_status": "ok", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    with raw_server(_serving(_answer("200 OK", body))) as url, pytest.raises(BadResponse):
        _client().status(url, "t")


# -- headers at the calendar's edges --------------------------------------------------


@pytest.mark.parametrize(
    "date",
    [
        "Fri, 31 Dec 9999 23:59:59 -0100",  # OverflowError on the previous client
        "Mon, 01 Jan 0001 00:00:00 +0100",
        "Mon, 01 Jan 99999 00:00:00 GMT",
        "Tue, 01 Jan 2999 00:00:00 GMT",  # parses, but is no clock
        "yesterday-ish",
    ],
)
def test_a_date_header_at_the_edges_is_ignored(date: str) -> None:
    page = _fetch(_answer("200 OK", PAGE, f"Date: {date}"))
    assert abs(page.server_time - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.parametrize(
    "retry_after",
    [
        "Fri, 31 Dec 9999 23:59:59 -0100",
        "Mon, 01 Jan 0001 00:00:00 +0100",
        "99999999999999999999999999",
        "1e400",
        "-5",
    ],
)
def test_a_retry_after_at_the_edges_is_clamped(retry_after: str) -> None:
    answer = _answer("429 Too Many Requests", b"", f"Retry-After: {retry_after}")
    with raw_server(_serving(answer)) as url, pytest.raises(RateLimited) as caught:
        _client().list_page(url, "t", "assets", PageQuery())
    assert caught.value.retry_after is None or 0 <= caught.value.retry_after <= 3600


# -- tokens a header cannot carry ------------------------------------------------------


@pytest.mark.parametrize("dirt", ["\ufeff", "\u200b", "\n", " ", "\u00e9"])
def test_a_token_a_header_cannot_carry_is_an_auth_failure_without_the_token(dirt: str) -> None:
    token = f"tok-{dirt}-very-secret-123456"
    requests = 0

    def serve(conn: socket.socket) -> None:
        nonlocal requests
        requests += 1
        conn.sendall(_answer("200 OK", PAGE))

    with raw_server(serve) as url:
        for call in (
            lambda: _client().list_page(url, token, "assets", PageQuery()),
            lambda: _client().status(url, token),
        ):
            with pytest.raises(AuthFailed) as caught:
                call()
            chain: list[BaseException] = []
            error: BaseException | None = caught.value
            while error is not None:
                chain.append(error)
                error = error.__cause__ or error.__context__
            text = " ".join(f"{e!s} {e!r}" for e in chain)
            assert "very-secret" not in text
            assert "set-token" in str(caught.value)
    assert requests == 0


def test_an_upstream_url_that_cannot_be_requested_is_a_bad_request() -> None:
    # httpx raises InvalidURL outside its HTTPError tree: it escaped the client.
    with pytest.raises(BadRequest, match="upstream URL"):
        _client().list_page("http://[::1", "t", "assets", PageQuery())


# -- proxies from the environment ---------------------------------------------------------


def _proxy_env(monkeypatch: pytest.MonkeyPatch, proxy: str, no_proxy: str = "") -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", no_proxy)


def test_a_proxy_from_the_environment_is_used_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []

    def proxy(conn: socket.socket) -> None:
        conn.sendall(_answer("200 OK", PAGE))

    def silent_proxy(conn: socket.socket) -> None:
        time.sleep(30)

    with raw_server(proxy, requests=seen) as proxy_url:
        _proxy_env(monkeypatch, proxy_url)
        page = _client().list_page("http://upstream.invalid", "t", "assets", PageQuery())
    assert [r.value["key"] for r in page.records] == ["a"]
    assert seen and seen[0].startswith(b"GET http://upstream.invalid/api/eam/assets?")

    with raw_server(silent_proxy) as proxy_url:
        _proxy_env(monkeypatch, proxy_url)
        started = time.monotonic()
        with pytest.raises(Unavailable, match="deadline"):
            client = _client(read_timeout=30.0, request_deadline=2.0)
            client.list_page("http://upstream.invalid", "t", "assets", PageQuery())
        assert time.monotonic() - started < 5


def test_no_proxy_still_connects_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    _proxy_env(monkeypatch, "http://127.0.0.1:9", no_proxy="127.0.0.1")  # nothing listens on 9
    page = _fetch(_answer("200 OK", PAGE))
    assert [r.value["key"] for r in page.records] == ["a"]
