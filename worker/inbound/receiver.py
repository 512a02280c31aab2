"""`entity-sync receiver`: the HTTP endpoint for the unified API's webhooks.

Routes: ``POST /upstream/webhooks`` (an event) and ``GET /healthz`` (the store
answers; the backlog of events waiting, counted up to a bound). For an event,
in this order: a ``Content-Length`` is required and at most
``UPSTREAM_WEBHOOK_MAX_BYTES`` (411, 413: refused before reading); exactly
that many bytes must arrive within the body deadline (400 when the client
closes early, 408 when it trickles); ``X-Webhook-Signature`` must be
``sha256=<hex HMAC-SHA256 of the raw body>`` under one of the configured
secrets, compared in constant time (401; nothing is parsed or kept); the body
must be JSON (400) and an event of the contract with no NUL or lone surrogate
in any string (422); its ``created_at`` must be inside the freshness window
and not ahead of this clock by more than the skew (422, a replay or a forged
date). A good event is kept in the store by its id (a redelivery is answered
200 and changes nothing), answered 202, and only then published as the task
``entity_sync.upstream_event``: the answer never waits on the broker, and a
lost publish is caught by the sweep. Whatever is raised while handling a
request, the client gets an answer (500 and a log line with the traceback
for a bug); refusals are logged by the minute (worker/inbound/refusals.py),
never a secret or a signature.

Why an event loop (asyncio, with h11 parsing HTTP/1.1) and not a pool of
request threads: a thread per connection is a slot a client can hold by
sending a byte every few seconds, and 64 such sockets kept every signed
event of the unified API out of the threaded server this replaced. Here an
idle or trickling socket costs a few kilobytes and no thread, so a thousand
of them leave the signed events answered (bench/receiver_sockets.py measures
it), and each is cut by deadlines: the first byte, the request line and
headers, and the body each have one (``Limits``). Headers are capped in total
size and in count (431), the number of open connections is capped (beyond it
a connection is closed unanswered), and there is no keep-alive. Parsing,
the store and the broker run in small thread pools, so a slow store delays
answers but never the loop that holds the sockets. It binds to loopback by
default; put a TLS-terminating proxy in front to receive from the Internet.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import resource
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from urllib.parse import urlsplit

import h11

from worker.errors import EntitySyncError
from worker.inbound.actions import (
    SIGNATURE_HEADER,
    BadEvent,
    UnparsableBody,
    freshness_problem,
    parse_event,
    to_record,
    verify_signature,
)
from worker.inbound.refusals import RefusalLog
from worker.store import SqlStore
from worker.timeutil import canonical

log = logging.getLogger("entity_sync.receiver")

PATH = "/upstream/webhooks"
BACKLOG = 2048  # connections the kernel queues before accept (capped by net.core.somaxconn)
HEALTH_BACKLOG_LIMIT = 1000  # /healthz counts waiting events up to this, never more
HEALTH_WAITING_S = 60.0  # an event still unprocessed after this is backlog

Publish = Callable[[str], None]  # enqueue processing of one kept event, by id


@dataclass(frozen=True)
class Limits:
    """What one connection may take, in time and bytes, and how many may be open."""

    first_byte_s: float = 5.0  # from accept to the first byte (then closed unanswered)
    headers_s: float = 10.0  # from accept to the end of the headers (then 408)
    body_s: float = 10.0  # from the end of the headers to the end of the body (then 408)
    max_header_bytes: int = 16 * 1024  # request line and headers together (431)
    max_headers: int = 64  # (431)
    max_connections: int = 4096  # open at once; beyond, closed unanswered
    store_threads: int = 8  # parse, verify-then-keep: the store work of the events


@dataclass(frozen=True)
class Freshness:
    """The freshness window of an event's ``created_at`` (settings.py says why)."""

    max_age_s: float = 3600.0
    skew_s: float = 300.0


@dataclass(frozen=True)
class _Answer:
    status: HTTPStatus
    body: dict[str, object]
    publish: str | None = None  # an event id to publish once answered


class _Refused(Exception):
    """Answer now with this status and reason (a refusal, logged by the minute)."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class ReceiverServer:
    """The listening receiver: bound at construction, served by ``start`` or ``serve_forever``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        store: SqlStore,
        secrets: Sequence[bytes],
        publish: Publish,
        max_bytes: int,
        limits: Limits | None = None,
        freshness: Freshness | None = None,
    ) -> None:
        if not secrets:
            raise ValueError("the receiver needs at least one secret")
        self.store = store
        self.secrets = list(secrets)
        self.publish = publish
        self.max_bytes = max_bytes
        self.limits = limits or Limits()
        self.freshness = freshness or Freshness()
        self.refusals = RefusalLog(log)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
        self._sock.setblocking(False)
        self._work = concurrent.futures.ThreadPoolExecutor(
            self.limits.store_threads, thread_name_prefix="receiver-store"
        )
        # The broker may hang (kombu retries); its waits never hold a store thread.
        self._publishing = concurrent.futures.ThreadPoolExecutor(
            2, thread_name_prefix="receiver-publish"
        )
        self._open = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def server_address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.server_address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    def start(self) -> ReceiverServer:
        """Serve in a background thread (tests); returns once it accepts."""
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"ready": ready}, name="receiver", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        return self

    def serve_forever(self, *, ready: threading.Event | None = None) -> None:
        """Serve until ``close`` (or, in the main thread, SIGINT/SIGTERM)."""
        asyncio.run(self._serve(ready))

    def close(self) -> None:
        if self._loop is not None and self._stopped is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(10)
        self._sock.close()
        self._work.shutdown(wait=False, cancel_futures=True)
        self._publishing.shutdown(wait=False, cancel_futures=True)

    # -- the loop ------------------------------------------------------------------------

    async def _serve(self, ready: threading.Event | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(signum, self._stopped.set)
        # asyncio listens again with its own backlog (100 unless told): a burst of
        # connections past it would wait in the kernel, unaccepted and uncut.
        server = await asyncio.start_server(self._connection, sock=self._sock, backlog=BACKLOG)
        flusher = asyncio.create_task(self._flush_refusals())
        if ready is not None:
            ready.set()
        try:
            await self._stopped.wait()
        finally:
            flusher.cancel()
            server.close()
            self.refusals.flush(final=True)

    async def _flush_refusals(self) -> None:
        while True:
            await asyncio.sleep(5)
            self.refusals.flush()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        if self._open >= self.limits.max_connections:
            self.refusals.note(503, "too many connections open: closed unanswered", peer)
            writer.transport.abort()
            return
        self._open += 1
        answered = False
        try:
            answer = await self._exchange(reader, writer, peer)
            if answer is not None:
                answered = True
                await _send(writer, answer, reader)
                if answer.publish is not None:
                    self._publish_later(answer.publish)
        except Exception:
            log.exception("receiver: a bug while serving %s", peer)
            if not answered:
                with contextlib.suppress(Exception):
                    await _send(
                        writer, _Answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "bug"}), reader
                    )
        finally:
            self._open -= 1
            writer.transport.abort()  # answered and lingered already, or nothing to say

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> _Answer | None:
        """Read one request within its deadlines and decide its answer (None: just close)."""
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        first = await _read(reader, accepted + self.limits.first_byte_s - loop.time())
        if first is None:
            self.refusals.note(408, f"no request within {self.limits.first_byte_s:g} s", peer)
            return None
        if not first:
            return None  # connected and closed: a port probe
        conn.receive_data(first)
        try:
            request = await self._request(conn, reader, accepted)
            if request is None:
                return None
            body = await self._body(conn, reader, writer, request)
            return await self._route(request, body)
        except _Refused as refused:
            self.refusals.note(refused.status.value, refused.reason, peer)
            return _Answer(refused.status, {"error": refused.reason})

    async def _request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, accepted: float
    ) -> h11.Request | None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = HTTPStatus(exc.error_status_hint)
                if status is HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
                    raise _Refused(
                        status, f"headers over {self.limits.max_header_bytes} bytes"
                    ) from None
                raise _Refused(status, f"not HTTP/1.1: {exc}"[:200]) from None
            if isinstance(event, h11.Request):
                if len(event.headers) > self.limits.max_headers:
                    raise _Refused(
                        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                        f"{len(event.headers)} headers, over the {self.limits.max_headers} allowed",
                    )
                return event
            if event is not h11.NEED_DATA:
                return None  # the client closed before a whole request
            data = await _read(reader, accepted + self.limits.headers_s - loop.time())
            if data is None:
                raise _Refused(
                    HTTPStatus.REQUEST_TIMEOUT,
                    f"headers not sent within {self.limits.headers_s:g} s",
                )
            conn.receive_data(data)

    async def _body(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: h11.Request,
    ) -> bytes:
        if request.method != b"POST":
            return b""
        raw = _header(request, b"content-length")
        if raw is None or _header(request, b"transfer-encoding") is not None:
            # A chunked body has no length to check before reading it.
            raise _Refused(HTTPStatus.LENGTH_REQUIRED, "no Content-Length")
        length = int(raw)  # h11 has checked it is a number
        if length > self.max_bytes:
            raise _Refused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {length} bytes over the {self.max_bytes} allowed",
            )
        if conn.they_are_waiting_for_100_continue:
            # curl and others wait (a second) for this before sending a larger body.
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_s
        chunks: list[bytes] = []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                got = sum(map(len, chunks))
                raise _Refused(
                    HTTPStatus.BAD_REQUEST, f"body ended after {got} of {length} bytes"
                ) from None
            if isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                data = await _read(reader, deadline - loop.time())
                if data is None:
                    raise _Refused(HTTPStatus.REQUEST_TIMEOUT, "body not sent in time")
                conn.receive_data(data)

    async def _route(self, request: h11.Request, body: bytes) -> _Answer:
        path = urlsplit(request.target.decode("ascii", "replace")).path
        if request.method == b"GET" and path == "/healthz":
            return await self._in_thread(self._health)
        if request.method == b"GET":
            raise _Refused(HTTPStatus.NOT_FOUND, "not found")
        if request.method != b"POST":
            method = request.method.decode("ascii", "replace")[:20]
            raise _Refused(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed")
        if path != PATH:
            raise _Refused(HTTPStatus.NOT_FOUND, f"no route {path[:100]!r}")
        signature = _header(request, SIGNATURE_HEADER.lower().encode())
        # The HMAC over at most max_bytes takes microseconds: checked on the loop, so
        # unsigned requests never queue for the store's threads.
        shown = signature.decode("ascii", "replace") if signature is not None else None
        if not verify_signature(self.secrets, shown, body):
            raise _Refused(HTTPStatus.UNAUTHORIZED, "signature missing or wrong")
        return await self._in_thread(self._keep, body)

    async def _in_thread(self, work: Callable[..., _Answer], *args: object) -> _Answer:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._work, work, *args)

    # -- the store's side (in a thread) ----------------------------------------------------

    def _health(self) -> _Answer:
        waiting_since = datetime.now(UTC) - timedelta(seconds=HEALTH_WAITING_S)
        try:
            backlog = self.store.upstream_backlog(
                received_before=canonical(waiting_since), limit=HEALTH_BACKLOG_LIMIT
            )
        except EntitySyncError as exc:
            log.warning("health check: the store does not answer: %s", exc)
            return _Answer(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "store unreachable"})
        shown = f"{HEALTH_BACKLOG_LIMIT}+" if backlog >= HEALTH_BACKLOG_LIMIT else str(backlog)
        return _Answer(HTTPStatus.OK, {"status": "ok", "waiting": shown})

    def _keep(self, body: bytes) -> _Answer:
        try:
            event = parse_event(body)
        except UnparsableBody as exc:
            raise _Refused(HTTPStatus.BAD_REQUEST, str(exc)) from None
        except BadEvent as exc:
            raise _Refused(HTTPStatus.UNPROCESSABLE_ENTITY, f"not an event: {exc}") from None
        stale = freshness_problem(
            event.created_at,
            now=datetime.now(UTC),
            max_age_s=self.freshness.max_age_s,
            skew_s=self.freshness.skew_s,
        )
        if stale is not None:
            raise _Refused(HTTPStatus.UNPROCESSABLE_ENTITY, f"not fresh: {stale}")
        try:
            fresh = self.store.record_upstream_event(to_record(event, body))
        except EntitySyncError as exc:
            # Not kept: the sender retries after its timeout.
            log.error("upstream event %s not kept, the store failed: %s", event.id, exc)
            return _Answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "store unavailable"})
        if not fresh:
            log.info("upstream event %s (%s) received again: kept once", event.id, event.type)
            return _Answer(HTTPStatus.OK, {"id": event.id, "status": "duplicate"})
        log.info(
            "upstream event %s (%s) kept for upstream connection %s",
            event.id,
            event.type,
            event.connection_id,
        )
        return _Answer(HTTPStatus.ACCEPTED, {"id": event.id, "status": "kept"}, publish=event.id)

    def _publish_later(self, event_id: str) -> None:
        def publish() -> None:
            try:
                self.publish(event_id)
            except Exception as exc:  # kombu raises many unrelated types when the broker is away
                log.warning(
                    "upstream event %s kept, enqueue failed (the sweep will): %s", event_id, exc
                )

        with contextlib.suppress(RuntimeError):  # shutting down: the sweep sends it
            self._publishing.submit(publish)


# -- small helpers -----------------------------------------------------------------------

LINGER_S = 2.0  # after an answer, how long unread input is drained before the close
LINGER_BYTES = 256 * 1024


async def _read(reader: asyncio.StreamReader, timeout_s: float) -> bytes | None:
    """Up to 16 KiB, b"" at EOF, None when nothing came within ``timeout_s``."""
    if timeout_s <= 0:
        return None
    try:
        return await asyncio.wait_for(reader.read(16 * 1024), timeout_s)
    except TimeoutError:
        return None
    except (ConnectionError, OSError):
        return b""


async def _send(
    writer: asyncio.StreamWriter, answer: _Answer, reader: asyncio.StreamReader
) -> None:
    """Write the answer, then drain what the client still sends for a moment.

    Closing a socket with unread input makes the kernel send a reset, which can
    destroy the answer before the client reads it (a 413 sent while the body
    is still arriving); reading a bounded amount first lets it arrive.
    """
    payload = json.dumps(answer.body).encode()
    status = answer.status
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n"
        "Server: entity-sync-receiver\r\n\r\n"
    ).encode()
    try:
        writer.write(head + payload)
        await asyncio.wait_for(writer.drain(), LINGER_S)
        if writer.can_write_eof():
            writer.write_eof()
        loop = asyncio.get_running_loop()
        deadline, drained = loop.time() + LINGER_S, 0
        while drained < LINGER_BYTES:
            data = await _read(reader, deadline - loop.time())
            if not data:
                break
            drained += len(data)
    except (TimeoutError, ConnectionError, OSError):
        pass  # the client went away or does not read: nothing more to do


def _header(request: h11.Request, name: bytes) -> bytes | None:
    for key, value in request.headers:
        if key == name:
            return bytes(value)
    return None


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


def _raise_open_files_limit() -> None:
    """Let the process hold as many sockets as its hard limit allows (often 1024 soft)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def serve(
    *,
    host: str,
    port: int,
    store: SqlStore,
    secrets: Sequence[bytes],
    publish: Publish,
    max_bytes: int,
    freshness: Freshness | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; first print ``RECEIVER LISTENING <url>`` on stdout."""
    _raise_open_files_limit()
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limits = Limits()
    if soft != resource.RLIM_INFINITY and soft - 64 < limits.max_connections:
        # Keep descriptors for the store, the broker and the log: refuse a connection
        # before accept() itself starts failing.
        limits = Limits(max_connections=max(16, soft - 64))
    server = ReceiverServer(
        host,
        port,
        store=store,
        secrets=secrets,
        publish=publish,
        max_bytes=max_bytes,
        limits=limits,
        freshness=freshness,
    )
    if host not in ("127.0.0.1", "::1", "localhost"):
        print(
            f"receiver: listening on {host}, beyond loopback; only signed events are kept",
            file=sys.stderr,
            flush=True,
        )
    print(f"RECEIVER LISTENING {server.url}{PATH}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
