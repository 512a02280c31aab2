"""One httpx transport for every request we send: a whole deadline and a resolver policy.

Used by the upstream client (``worker.upstream.client``) and the webhook
deliveries (``worker.outbox.webhooks``), built only from public httpx and
httpcore API: an httpcore ``NetworkBackend`` under an ``httpcore.ConnectionPool``
(or ``HTTPProxy``), wrapped by an ``httpx.BaseTransport`` that maps httpcore's
exceptions to httpx's.

* **A deadline over the whole request.** httpx's timeouts apply to each socket
  operation, so a server that accepts and never answers its TLS handshake, or
  sends its headers a byte at a time, is never timed out as a whole. Every
  connect, TLS handshake, read and write of a request gets at most the time
  left until its deadline, and a ``Watchdog`` shuts the request's sockets down
  when the deadline passes, which also ends an operation that was already
  waiting (a stalled or trickling TLS handshake). The deadline runs from
  ``handle_request`` until the response is closed; past it, whatever was
  raised becomes ``DeadlineExceeded`` (an ``httpx.TimeoutException``).
* **A resolver policy.** ``connect_to`` (host -> the addresses allowed for it,
  raising to refuse) resolves a name once, and the backend connects to exactly
  those addresses: the webhook SSRF guard (``worker.outbox.destinations``)
  checks the very address it connects to. TLS still gets the URL's host for
  SNI and the certificate check, and the Host header is the URL's.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

__all__ = ["ConnectTo", "DeadlineExceeded", "DeadlineTransport", "Watchdog", "environment_proxies"]

ConnectTo = Callable[[str], list[str]]
"""host -> the IP addresses to connect to; raises (ValueError, OSError) to refuse."""


class DeadlineExceeded(httpx.TimeoutException):
    """The request's whole deadline passed (connect, TLS, headers or body)."""


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
        self._outer: _Request | None = None

    @property
    def expired(self) -> bool:
        """Whether the deadline passed (the request's sockets were shut down)."""
        return self._request.expired or self._request.remaining() <= 0

    def __enter__(self) -> Watchdog:
        self._outer = getattr(_current, "request", None)
        _current.request = self._request
        _deadlines.watch(self._request)
        return self

    def __exit__(self, *exc: object) -> None:
        self._request.finish()
        _current.request = self._outer


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


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own socket backend, each operation bounded by the request's deadline.

    With ``connect_to``, a host is resolved by it once and only the addresses
    it returns are connected to. Name resolution is the one step the deadline
    cannot interrupt (the resolver's own timeouts bound it).
    """

    def __init__(self, connect_to: ConnectTo | None = None) -> None:
        self._inner = httpcore.SyncBackend()
        self._connect_to = connect_to

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        failure: Exception = httpcore.ConnectError(f"no address for {host}")
        for address in self._addresses(host):
            try:
                stream = self._inner.connect_tcp(
                    address,
                    port,
                    _clamp(timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            _adopt(stream)
            return _DeadlineStream(stream)
        raise failure

    def _addresses(self, host: str) -> list[str]:
        if self._connect_to is None:
            return [host]
        try:
            return self._connect_to(host)
        except ValueError as exc:  # refused by the policy: the cause chain keeps its reason
            raise httpcore.ConnectError(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc

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


# httpcore's exceptions and the httpx ones they become; the most specific wins.
_HTTPCORE_TO_HTTPX: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.ProtocolError: httpx.ProtocolError,
}


@contextlib.contextmanager
def _mapped(watchdog: Watchdog, request: httpx.Request) -> Iterator[None]:
    """httpcore's exceptions as httpx's; anything raised past the deadline as DeadlineExceeded."""
    try:
        yield
    except DeadlineExceeded:
        raise
    except Exception as exc:
        if watchdog.expired:  # whatever a socket shut under a reader or a handshake raised
            raise DeadlineExceeded("the request's deadline passed", request=request) from exc
        for kind in type(exc).__mro__:
            mapped = _HTTPCORE_TO_HTTPX.get(kind)
            if mapped is not None:
                raise mapped(str(exc), request=request) from exc
        raise


class _ResponseStream(httpx.SyncByteStream):
    """The body, under the request's deadline; closing it ends the request's watch."""

    def __init__(self, inner: Iterable[bytes], watchdog: Watchdog, request: httpx.Request) -> None:
        self._inner = inner
        self._watchdog = watchdog
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        with _mapped(self._watchdog, self._request):
            for part in self._inner:
                if self._watchdog.expired:
                    raise DeadlineExceeded("the request's deadline passed", request=self._request)
                yield part

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                with _mapped(self._watchdog, self._request):
                    close()
        finally:
            self._watchdog.__exit__()


class DeadlineTransport(httpx.BaseTransport):
    """An httpx transport whose every request ends by ``deadline_s``; see the module doc.

    ``proxy`` sends through an HTTP(S) proxy (the proxy's own connection is
    under the same deadline); ``connect_to`` is the resolver policy. Retries
    are never made here: a retry is the caller's decision.
    """

    def __init__(
        self,
        *,
        deadline_s: float,
        max_connections: int = 20,
        max_keepalive_connections: int | None = None,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        proxy: httpx.Proxy | None = None,
        connect_to: ConnectTo | None = None,
    ) -> None:
        self._deadline_s = deadline_s
        backend = _DeadlineBackend(connect_to)
        keepalive = (
            max_connections if max_keepalive_connections is None else max_keepalive_connections
        )
        context = ssl_context or httpx.create_ssl_context()
        self._connections: httpcore.ConnectionPool
        if proxy is None:
            self._connections = httpcore.ConnectionPool(
                ssl_context=context,
                max_connections=max_connections,
                max_keepalive_connections=keepalive,
                keepalive_expiry=keepalive_expiry,
                retries=0,
                network_backend=backend,
            )
            return
        self._connections = httpcore.HTTPProxy(
            proxy_url=httpcore.URL(
                scheme=proxy.url.raw_scheme,
                host=proxy.url.raw_host,
                port=proxy.url.port,
                target=proxy.url.raw_path,
            ),
            proxy_auth=proxy.raw_auth,
            proxy_headers=proxy.headers.raw,
            proxy_ssl_context=proxy.ssl_context,
            ssl_context=context,
            max_connections=max_connections,
            max_keepalive_connections=keepalive,
            keepalive_expiry=keepalive_expiry,
            retries=0,
            network_backend=backend,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the deadline runs until the response is closed."""
        if not isinstance(request.stream, httpx.SyncByteStream):
            raise TypeError("DeadlineTransport sends synchronous request bodies only")
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        watchdog = Watchdog(self._deadline_s).__enter__()
        try:
            with _mapped(watchdog, request):
                answer = self._connections.handle_request(core_request)
        except BaseException:
            watchdog.__exit__()
            raise
        assert isinstance(answer.stream, Iterable)  # a sync pool answers with a sync stream
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_ResponseStream(answer.stream, watchdog, request),
            extensions=answer.extensions,
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._connections.close()


def environment_proxies() -> dict[str, str | None]:
    """httpx mount patterns for the proxies the environment names, as httpx reads them.

    HTTP_PROXY, HTTPS_PROXY and ALL_PROXY give ``"http://"``, ``"https://"`` and
    ``"all://"`` a proxy URL; each NO_PROXY host maps to None (connect directly).
    """
    found = urllib.request.getproxies()
    mounts: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        url = found.get(scheme)
        if url:
            mounts[f"{scheme}://"] = url if "://" in url else f"http://{url}"
    for host in (h.strip() for h in found.get("no", "").split(",")):
        if host == "*":
            return {}
        if not host:
            continue
        if "://" in host:
            mounts[host] = None
        elif _is_ip(host) or host.lower() == "localhost":
            mounts[f"all://{host}" if ":" not in host else f"all://[{host}]"] = None
        else:
            mounts[f"all://*{host}"] = None
    return mounts


def _is_ip(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False
