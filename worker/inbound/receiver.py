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
in any string (422; worker/inbound/checks.py); its ``created_at`` must be
inside the freshness window and not ahead of this clock by more than the skew
(422, a replay or a forged date). A good event is kept in the store by its
id (a redelivery is answered 200 and changes nothing), answered 202, and only
then published as the task ``entity_sync.upstream_event``: the answer never
waits on the broker, and a lost publish is caught by the sweep. Whatever is raised while handling a
request, the client gets an answer (500 and a log line with the traceback
for a bug); refusals are logged by the minute (worker/inbound/refusals.py),
never a secret or a signature.

Why an event loop (asyncio, with h11 parsing HTTP/1.1) and not a pool of
request threads: a thread per connection is a slot a client can hold by
sending a byte every few seconds, and 64 such sockets would keep every
signed event of the unified API out of a threaded server. Here an
idle or trickling socket costs a few kilobytes and no thread, so a thousand
of them leave the signed events answered (bench/receiver_sockets.py measures
it), and each is cut by deadlines: the first byte, the request line and
headers, and the body each have one (``Limits``, worker/inbound/connection.py,
which reads a request and writes an answer). Headers are capped in total
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

from worker.errors import EntitySyncError
from worker.inbound.actions import (
    UPSTREAM_SIGNATURE_HEADER,
    BadEvent,
    UnparsableBody,
    parse_event,
    to_record,
    verify_signature,
)
from worker.inbound.checks import freshness_problem
from worker.inbound.connection import Answer, Limits, Refused, Request, read_request, send
from worker.inbound.refusals import RefusalLog
from worker.store import SqlStore
from worker.timeutil import canonical

log = logging.getLogger("entity_sync.receiver")

PATH = "/upstream/webhooks"
BACKLOG = 2048  # connections the kernel queues before accept (capped by net.core.somaxconn)
HEALTH_BACKLOG_LIMIT = 1000  # /healthz counts waiting events up to this, never more
HEALTH_WAITING_S = 60.0  # an event still unprocessed after this is backlog
MAX_PUBLISHES_WAITING = 1000  # beyond, a kept event's publish is left to the sweep

EnqueueEvent = Callable[[str], None]  # enqueue processing of one kept event, by id


@dataclass(frozen=True)
class Freshness:
    """The freshness window of an event's ``created_at`` (settings.py says why)."""

    max_age_s: float = 3600.0
    skew_s: float = 300.0


class ReceiverServer:
    """The listening receiver: bound at construction, served by ``start`` or ``serve_forever``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        store: SqlStore,
        secrets: Sequence[bytes],
        publish: EnqueueEvent,
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
        self._publishes_waiting = 0
        self._publish_lock = threading.Lock()
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
        answer: Answer | None = None
        try:
            try:
                request = await read_request(reader, writer, self.limits, self.max_bytes)
                answer = None if request is None else await self._route(request)
            except Refused as refused:
                self.refusals.note(refused.status.value, refused.reason, peer)
                if refused.answer:
                    answer = Answer(refused.status, {"error": refused.reason})
            if answer is not None:
                await send(writer, reader, answer)
                if answer.publish is not None:
                    self._publish_later(answer.publish)
        except Exception:
            log.exception("receiver: a bug while serving %s", peer)
            if answer is None:
                with contextlib.suppress(Exception):
                    await send(
                        writer, reader, Answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "bug"})
                    )
        finally:
            self._open -= 1
            writer.transport.abort()  # answered and lingered already, or nothing to say

    async def _route(self, request: Request) -> Answer:
        if request.method == "GET" and request.path == "/healthz":
            return await self._in_thread(self._health)
        if request.method == "GET":
            raise Refused(HTTPStatus.NOT_FOUND, "not found")
        if request.method != "POST":
            raise Refused(HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method} is not allowed")
        if request.path != PATH:
            raise Refused(HTTPStatus.NOT_FOUND, f"no route {request.path[:100]!r}")
        # The HMAC over at most max_bytes takes microseconds: checked on the loop, so
        # unsigned requests never queue for the store's threads.
        signature = request.headers.get(UPSTREAM_SIGNATURE_HEADER.lower())
        if not verify_signature(self.secrets, signature, request.body):
            raise Refused(HTTPStatus.UNAUTHORIZED, "signature missing or wrong")
        return await self._in_thread(self._keep, request.body)

    async def _in_thread(self, work: Callable[..., Answer], *args: object) -> Answer:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._work, work, *args)

    # -- the store's side (in a thread) ----------------------------------------------------

    def _health(self) -> Answer:
        waiting_since = datetime.now(UTC) - timedelta(seconds=HEALTH_WAITING_S)
        try:
            backlog = self.store.upstream_backlog(
                received_before=canonical(waiting_since), limit=HEALTH_BACKLOG_LIMIT
            )
        except EntitySyncError as exc:
            log.warning("health check: the store does not answer: %s", exc)
            return Answer(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "store unreachable"})
        shown = f"{HEALTH_BACKLOG_LIMIT}+" if backlog >= HEALTH_BACKLOG_LIMIT else str(backlog)
        return Answer(HTTPStatus.OK, {"status": "ok", "waiting": shown})

    def _keep(self, body: bytes) -> Answer:
        try:
            event = parse_event(body)
        except UnparsableBody as exc:
            raise Refused(HTTPStatus.BAD_REQUEST, str(exc)) from None
        except BadEvent as exc:
            raise Refused(HTTPStatus.UNPROCESSABLE_ENTITY, f"not an event: {exc}") from None
        stale = freshness_problem(
            event.created_at,
            now=datetime.now(UTC),
            max_age_s=self.freshness.max_age_s,
            skew_s=self.freshness.skew_s,
        )
        if stale is not None:
            raise Refused(HTTPStatus.UNPROCESSABLE_ENTITY, f"not fresh: {stale}")
        try:
            fresh = self.store.record_upstream_event(to_record(event, body))
        except EntitySyncError as exc:
            # Not kept: the sender retries after its timeout.
            log.error("upstream event %s not kept, the store failed: %s", event.id, exc)
            return Answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "store unavailable"})
        if not fresh:
            log.info("upstream event %s (%s) received again: kept once", event.id, event.type)
            return Answer(HTTPStatus.OK, {"id": event.id, "status": "duplicate"})
        log.info(
            "upstream event %s (%s) kept for upstream connection %s",
            event.id,
            event.type,
            event.connection_id,
        )
        return Answer(HTTPStatus.ACCEPTED, {"id": event.id, "status": "kept"}, publish=event.id)

    def _publish_later(self, event_id: str) -> None:
        """Publish in the background; with a backlog of publishes, leave it to the sweep.

        A broker that is away takes seconds per attempt: the queue of publishes
        is bounded, as the event is kept and the sweep sends what is waiting.
        """
        if self._publishes_waiting >= MAX_PUBLISHES_WAITING:
            log.warning("upstream event %s kept; enqueue left to the sweep (broker slow)", event_id)
            return

        def publish() -> None:
            try:
                self.publish(event_id)
            except Exception as exc:  # kombu raises many unrelated types when the broker is away
                log.warning(
                    "upstream event %s kept, enqueue failed (the sweep will): %s", event_id, exc
                )
            finally:
                with self._publish_lock:
                    self._publishes_waiting -= 1

        with self._publish_lock:
            self._publishes_waiting += 1
        try:
            self._publishing.submit(publish)
        except RuntimeError:  # shutting down: the sweep sends it
            with self._publish_lock:
                self._publishes_waiting -= 1


# -- small helpers -----------------------------------------------------------------------


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
    publish: EnqueueEvent,
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
