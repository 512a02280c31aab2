"""The HTTP edge against hostile answers: huge bodies, trickling servers, refusals."""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from worker.errors import BadResponse, Unavailable
from worker.settings import Settings
from worker.upstream.client import PageQuery, UpstreamClient

pytestmark = pytest.mark.integration

Serve = Callable[[socket.socket], None]


@contextmanager
def raw_server(serve: Serve, requests: list[bytes] | None = None) -> Iterator[str]:
    """A one-shot-per-connection TCP server speaking whatever ``serve`` writes
    (the requests it read are appended to ``requests`` when given)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def loop() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=_handle, args=(conn,), daemon=True).start()

    def _handle(conn: socket.socket) -> None:
        with conn:
            request = conn.recv(65536)  # the request; we answer whatever it was
            if requests is not None:
                requests.append(request)
            with contextlib.suppress(OSError):  # the client hung up on us, as it should
                serve(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        thread.join(2)


def _client(**overrides: float) -> UpstreamClient:
    values = {"read_timeout": 2.0, "request_deadline": 3.0, "max_response_bytes": 1 << 20}
    values.update(overrides)
    return UpstreamClient(settings=Settings(**values))  # type: ignore[arg-type]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_one_gigabyte_body_is_refused_without_reading_it() -> None:
    def serve(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1073741824\r\n\r\n")  # fmt: skip
        chunk = b"x" * 65536
        for _ in range(16384):  # a real gigabyte, if anyone kept reading
            conn.sendall(chunk)

    before = _peak_rss_mb()
    with raw_server(serve) as url, pytest.raises(BadResponse, match="cap"):
        _client().list_page(url, "t", "assets", PageQuery())
    assert _peak_rss_mb() - before < 50


def test_a_huge_chunked_body_is_cut_at_the_cap() -> None:
    def serve(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        chunk = b"x" * 65536
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        for _ in range(16384):
            conn.sendall(frame)

    before = _peak_rss_mb()
    started = time.monotonic()
    with raw_server(serve) as url, pytest.raises(BadResponse, match="cap"):
        _client().list_page(url, "t", "assets", PageQuery())
    assert time.monotonic() - started < 30
    assert _peak_rss_mb() - before < 50


def test_a_server_trickling_one_byte_a_second_meets_the_deadline() -> None:
    def serve(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n")  # fmt: skip
        for _ in range(1000):
            conn.sendall(b" ")
            time.sleep(1.0)

    started = time.monotonic()
    with raw_server(serve) as url, pytest.raises(Unavailable, match="deadline"):
        _client(read_timeout=5.0, request_deadline=2.0).list_page(url, "t", "assets", PageQuery())
    assert time.monotonic() - started < 10


def test_refused_and_unresolvable_hosts_are_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(Unavailable, match="transport"):
        _client().status(f"http://127.0.0.1:{closed_port}", "t")
    with pytest.raises(Unavailable):
        _client().status("http://no-such-host.invalid", "t")


def test_a_reset_connection_is_unavailable() -> None:
    def serve(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    with raw_server(serve) as url, pytest.raises(Unavailable):
        _client().list_page(url, "t", "assets", PageQuery())


def test_the_token_never_appears_in_an_error() -> None:
    token = "tok-very-secret-123456"

    def serve(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n"
                     b"Content-Length: 20\r\n\r\n<html>proxy</html>  ")  # fmt: skip

    with raw_server(serve) as url, pytest.raises(Unavailable) as caught:
        _client().list_page(url, token, "assets", PageQuery())
    assert token not in str(caught.value) and token not in repr(caught.value.__cause__)
