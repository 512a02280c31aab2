"""What bounds one upstream request: a whole deadline, decoded-size caps, safe parsing.

``upstream.py`` maps answers to our errors; this module keeps every answer
finite in time and size before it gets there:

* **A deadline over the whole request.** httpx's timeouts apply to each socket
  operation, so a server that accepts and never answers, or sends its headers
  a byte at a time, is never timed out as a whole. ``DeadlineBackend`` sits
  under httpcore and gives every connect, TLS handshake, read and write of a
  request at most the time left until that request's deadline; a ``Watchdog``
  shuts the request's sockets down when the deadline passes, which also ends
  an operation that was already waiting (a trickling TLS handshake).
* **Caps on decoded bytes.** ``Decoder`` inflates gzip/deflate, chained
  encodings included, a chunk at a time and never produces more than the cap:
  an 870-byte answer that inflates to 400 MB is refused after the cap.
* **Bounded parsing of small bodies** (error and status answers): nesting depth
  and number length are checked before ``json`` recurses or builds a bignum.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import os
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpcore

MAX_JSON_DEPTH = 64  # error and status bodies are shallow; deeper is not the contract
MAX_NUMBER_CHARS = 64  # a longer number in an error body is not a code or a count


class BodyTooLarge(Exception):
    """The decoded body would pass the cap."""


class UndecodableBody(Exception):
    """A Content-Encoding we do not speak, or a compressed body that is broken."""


# -- the deadline ---------------------------------------------------------------------


@dataclass(eq=False)
class _Request:
    deadline: float  # time.monotonic()
    sockets: list[socket.socket] = field(default_factory=list)
    expired: bool = False
    finished: bool = False  # the request is over: its sockets may serve another one now
    lock: threading.Lock = field(default_factory=threading.Lock)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def adopt(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self.lock:
            if self.expired:
                _shut(sock)
            elif all(s is not sock for s in self.sockets):
                self.sockets.append(sock)

    def expire(self) -> None:
        with self.lock:
            if self.finished:
                return
            self.expired = True
            for sock in self.sockets:
                _shut(sock)

    def finish(self) -> None:
        with self.lock:
            self.finished = True
            self.sockets.clear()


_FORGET_FINISHED_AT = 1024


class _Deadlines:
    """One thread per process that expires requests whose deadline passed.

    A timer thread per request cost more CPU than reading the page it guarded
    (a thread started and woken again for every request, under the GIL).
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._waiting: list[tuple[float, int, _Request]] = []  # a heap by deadline
        self._order = itertools.count()  # ties never compare two requests
        self._pid: int | None = None  # the process whose thread is running

    def watch(self, request: _Request) -> None:
        with self._wake:
            if self._pid != os.getpid():  # the first request, or a forked child's
                self._pid = os.getpid()
                self._waiting.clear()
                threading.Thread(target=self._run, name="request-deadlines", daemon=True).start()
            if len(self._waiting) >= _FORGET_FINISHED_AT:
                # Finished requests wait in the heap until their deadline: drop them.
                self._waiting = [entry for entry in self._waiting if not entry[2].finished]
                heapq.heapify(self._waiting)
            heapq.heappush(self._waiting, (request.deadline, next(self._order), request))
            if self._waiting[0][2] is request:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._waiting and self._waiting[0][2].finished:
                    heapq.heappop(self._waiting)
                if not self._waiting:
                    self._wake.wait()
                    continue
                left = self._waiting[0][0] - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                    continue
                request = heapq.heappop(self._waiting)[2]
            request.expire()


_deadlines = _Deadlines()


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also under TLS: SSLSocket.shutdown would drop
    # the TLS object under a thread still reading through it.
    with contextlib.suppress(OSError):  # closed already: nothing left to wake
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_current = threading.local()  # the request this thread is sending, if any


class Watchdog:
    """``with Watchdog(seconds):`` around one request: its deadline, enforced."""

    def __init__(self, seconds: float) -> None:
        self._request = _Request(deadline=time.monotonic() + seconds)

    @property
    def expired(self) -> bool:
        """Whether the deadline passed (the request's sockets were shut down)."""
        return self._request.expired or self._request.remaining() <= 0

    def __enter__(self) -> Watchdog:
        _current.request = self._request
        _deadlines.watch(self._request)
        return self

    def __exit__(self, *exc: object) -> None:
        self._request.finish()
        _current.request = None


def _clamp(timeout: float | None, timeout_error: type[Exception]) -> float | None:
    request: _Request | None = getattr(_current, "request", None)
    if request is None:
        return timeout
    left = request.remaining()
    if left <= 0 or request.expired:
        raise timeout_error("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


def _adopt(stream: httpcore.NetworkStream) -> None:
    request: _Request | None = getattr(_current, "request", None)
    if request is not None:
        request.adopt(stream.get_extra_info("socket"))


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        _adopt(self._inner)  # a pooled connection serves a new request: watch it too
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _adopt(self._inner)
        self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        _adopt(self._inner)
        clamped = _clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, clamped))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own socket backend, each operation bounded by the request's deadline.

    Name resolution inside connect is the one step it cannot interrupt (the
    resolver's own timeouts bound it).
    """

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host,
            port,
            _clamp(timeout, httpcore.ConnectTimeout),
            local_address=local_address,
            socket_options=socket_options,
        )
        _adopt(stream)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(
            path, _clamp(timeout, httpcore.ConnectTimeout), socket_options=socket_options
        )
        _adopt(stream)
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


# -- decoding with a cap --------------------------------------------------------------

ACCEPT_ENCODING = "gzip, deflate"  # what Decoder speaks; nothing else is asked for


class _Inflate:
    """One gzip or deflate layer, producing at most ``limit`` bytes in all."""

    def __init__(self, encoding: str, limit: int) -> None:
        self._encoding = encoding
        self._limit = limit
        self._produced = 0
        # gzip: the gzip header; deflate: zlib-wrapped as RFC 9110 says, raw as
        # some servers send it (decided on the first bytes).
        self._wbits = zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS
        self._engine: Any = None
        self._head = b""  # deflate: the first byte, until a second one arrives

    def feed(self, data: bytes) -> bytes:
        if self._engine is None and self._encoding == "deflate" and len(self._head + data) < 2:
            self._head += data  # zlib-wrapped or raw: two bytes tell
            return b""
        data, self._head = self._head + data, b""
        out: list[bytes] = []
        while data:
            if self._engine is None or (self._engine.eof and self._encoding == "gzip"):
                # The first bytes, or a further gzip member after the one that ended.
                wbits = self._wbits
                if self._encoding == "deflate" and not _zlib_header(data):
                    wbits = -zlib.MAX_WBITS  # raw deflate: no zlib header
                self._engine = zlib.decompressobj(wbits)
            elif self._engine.eof:
                break  # bytes after the end of a deflate stream: ignored
            try:
                piece = self._engine.decompress(data, self._limit - self._produced + 1)
            except zlib.error as exc:
                raise UndecodableBody(f"broken {self._encoding} body: {exc}") from None
            out.append(self._count(piece))
            data = self._engine.unused_data if self._engine.eof else b""
        return b"".join(out)

    def finish(self) -> bytes:
        if self._head:
            raise UndecodableBody(f"truncated {self._encoding} body")
        if self._engine is None:
            return b""
        try:
            out = self._engine.flush()
        except zlib.error as exc:
            raise UndecodableBody(f"broken {self._encoding} body: {exc}") from None
        if not self._engine.eof:
            raise UndecodableBody(f"truncated {self._encoding} body")
        return self._count(out)

    def _count(self, out: bytes) -> bytes:
        self._produced += len(out)
        if self._produced > self._limit or self._engine.unconsumed_tail:
            raise BodyTooLarge(f"{self._encoding} body inflates past {self._limit} bytes")
        return out


def _zlib_header(data: bytes) -> bool:
    """Whether ``data`` (two bytes at least) opens with a zlib header (RFC 1950)."""
    return data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


class Decoder:
    """Undo a Content-Encoding (``gzip``, ``deflate``, chained, or none), capped.

    Every layer's output is capped, not only the last: a gzip inside a gzip
    inflates at each step.
    """

    def __init__(self, content_encoding: str | None, limit: int) -> None:
        names = [n.strip().lower() for n in (content_encoding or "").split(",") if n.strip()]
        names = [n for n in names if n != "identity"]
        unknown = [n for n in names if n not in ("gzip", "x-gzip", "deflate")]
        if unknown:
            raise UndecodableBody(f"unsupported Content-Encoding {', '.join(unknown)!r}")
        # Applied in the order listed, so they are undone last first.
        self._layers = [_Inflate("gzip" if n == "x-gzip" else n, limit) for n in reversed(names)]
        self._limit = limit
        self._size = 0

    def feed(self, chunk: bytes) -> bytes:
        for layer in self._layers:
            chunk = layer.feed(chunk)
        return self._count(chunk)

    def finish(self) -> bytes:
        out = b""
        for layer in self._layers:
            out = layer.feed(out) + layer.finish()
        return self._count(out)

    def _count(self, chunk: bytes) -> bytes:
        self._size += len(chunk)
        if self._size > self._limit:
            raise BodyTooLarge(f"decoded body passes {self._limit} bytes")
        return chunk


# -- bounded JSON for small bodies ----------------------------------------------------


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _short_number(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        if len(text) > MAX_NUMBER_CHARS:
            raise ValueError(f"a number of {len(text)} characters")
        return kind(text)

    return parse


def loads_bounded(body: bytes) -> Any:
    """``json.loads`` for small bodies; ValueError past the depth or number bounds."""
    text = body.decode("utf-8", errors="replace")
    if nesting_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text, parse_int=_short_number(int), parse_float=_short_number(float))
