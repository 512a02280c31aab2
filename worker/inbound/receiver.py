"""`entity-sync receiver`: the HTTP endpoint for the unified API's webhooks.

Routes: ``POST /upstream/webhooks`` (an event) and ``GET /healthz`` (the store
answers). For an event, in this order: a ``Content-Length`` is required and
at most ``UPSTREAM_WEBHOOK_MAX_BYTES`` (411, 413: refused before reading);
exactly that many bytes must arrive within the socket timeout (400, 408);
``X-Webhook-Signature`` must be ``sha256=<hex HMAC-SHA256 of the raw body>``
under one of the configured secrets, compared in constant time (401; nothing
is parsed or kept); the body must be an event of the contract (400, or 422
for a JSON body with the wrong fields). A good event is kept in the store by
its id (a redelivery is answered 200 and changes nothing), answered 202, and
only then published as the task ``entity_sync.upstream_event``: the answer
never waits on the broker, and a lost publish is caught by the sweep. Every
refusal is one log line with the peer and the reason, never a secret or a
signature.

Why the standard library's threaded server, as the dashboard uses: one
request costs an HMAC and one short SQL insert, the only client is the
unified API's sender (a few events per connection and day, retried after
10 s), and the process needs no dependency beyond the worker's. What a
production endpoint needs on top is here: a hard body cap, a per-connection
socket timeout and a whole-request deadline (a client trickling bytes is
dropped), a bound on concurrent
connections (closed unanswered beyond it) and no keep-alive. An ASGI server would buy
throughput this endpoint never needs. It binds to loopback by default; put a
TLS-terminating proxy in front to receive from the Internet.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from worker.errors import EntitySyncError
from worker.inbound.actions import (
    SIGNATURE_HEADER,
    BadEvent,
    parse_event,
    to_record,
    verify_signature,
)
from worker.store import SqlStore

log = logging.getLogger("entity_sync.receiver")

PATH = "/upstream/webhooks"
SOCKET_TIMEOUT_S = 10.0  # the longest silence inside a request
REQUEST_DEADLINE_S = 30.0  # a whole request, however it trickles
MAX_CONCURRENT = 32

Publish = Callable[[str], None]  # enqueue processing of one kept event, by id


class ReceiverServer(ThreadingHTTPServer):
    """The listening receiver; ``url`` is what it is bound to."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self,
        host: str,
        port: int,
        *,
        store: SqlStore,
        secrets: Sequence[bytes],
        publish: Publish,
        max_bytes: int,
        request_deadline_s: float = REQUEST_DEADLINE_S,
        max_concurrent: int = MAX_CONCURRENT,
    ) -> None:
        if not secrets:
            raise ValueError("the receiver needs at least one secret")
        self.store = store
        self.secrets = list(secrets)
        self.publish = publish
        self.max_bytes = max_bytes
        self.request_deadline_s = request_deadline_s
        self.slots = threading.BoundedSemaphore(max_concurrent)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.address_family = family
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host!s}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve a connection in a thread of its own, at most MAX_CONCURRENT at once:
        beyond that the connection is closed unanswered (the sender retries)."""
        if not self.slots.acquire(blocking=False):
            log.warning("refused a connection from %s: too many at once", client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def start(self) -> ReceiverServer:
        """Serve in a background thread (tests)."""
        threading.Thread(target=self.serve_forever, name="receiver", daemon=True).start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: ReceiverServer
    timeout = SOCKET_TIMEOUT_S  # applied to the connection's socket
    protocol_version = "HTTP/1.0"  # one request per connection

    def setup(self) -> None:
        super().setup()
        # The socket timeout bounds each silence; this bounds the whole request,
        # so a client trickling a byte every few seconds cannot hold a slot.
        self._deadline = threading.Timer(self.server.request_deadline_s, self._cut)
        self._deadline.daemon = True
        self._deadline.start()

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def _cut(self) -> None:
        log.warning("dropped a connection from %s: past its deadline", self.client_address[0])
        with contextlib.suppress(OSError):  # closed meanwhile
            self.connection.shutdown(socket.SHUT_RDWR)

    def version_string(self) -> str:
        return "entity-sync-receiver"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Silence the per-request line; refusals are logged with their reason."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        if urlsplit(self.path).path != "/healthz":
            self._reply(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        try:
            self.server.store.upstream_event_counts()
        except EntitySyncError as exc:
            log.warning("health check: the store does not answer: %s", exc)
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "store unreachable"})
            return
        self._reply(HTTPStatus.OK, {"status": "ok"})

    def do_POST(self) -> None:  # noqa: N802
        self._event()

    def do_PUT(self) -> None:  # noqa: N802
        self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not allowed")

    do_DELETE = do_PATCH = do_PUT  # noqa: N815

    def _event(self) -> None:
        if urlsplit(self.path).path != PATH:
            self._refuse(HTTPStatus.NOT_FOUND, f"no route {self.path[:100]!r}")
            return
        body = self._body()
        if body is None:
            return
        if not verify_signature(self.server.secrets, self.headers.get(SIGNATURE_HEADER), body):
            self._refuse(HTTPStatus.UNAUTHORIZED, "signature missing or wrong")
            return
        try:
            json.loads(body)
        except ValueError:
            self._refuse(HTTPStatus.BAD_REQUEST, "body is not JSON")
            return
        try:
            event = parse_event(body)
        except BadEvent as exc:
            self._refuse(HTTPStatus.UNPROCESSABLE_ENTITY, f"not an event: {exc}")
            return
        try:
            fresh = self.server.store.record_upstream_event(to_record(event, body))
        except EntitySyncError as exc:
            # Not kept: the sender retries after its timeout.
            log.error("upstream event %s not kept, the store failed: %s", event.id, exc)
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "store unavailable"})
            return
        if not fresh:
            log.info("upstream event %s (%s) received again: kept once", event.id, event.type)
            self._reply(HTTPStatus.OK, {"id": event.id, "status": "duplicate"})
            return
        self._reply(HTTPStatus.ACCEPTED, {"id": event.id, "status": "kept"})
        log.info(
            "upstream event %s (%s) kept for upstream connection %s",
            event.id,
            event.type,
            event.connection_id,
        )
        try:
            self.server.publish(event.id)
        except Exception as exc:  # kombu raises many unrelated types when the broker is away
            log.warning(
                "upstream event %s kept, enqueue failed (the sweep will): %s", event.id, exc
            )

    def _body(self) -> bytes | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            self._refuse(HTTPStatus.LENGTH_REQUIRED, "no Content-Length")
            return None
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self._refuse(HTTPStatus.BAD_REQUEST, "bad Content-Length")
            return None
        if length > self.server.max_bytes:
            self._refuse(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {length} bytes over the {self.server.max_bytes} allowed",
            )
            return None
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self._refuse(HTTPStatus.REQUEST_TIMEOUT, "body not sent in time")
            return None
        if len(body) != length:
            self._refuse(HTTPStatus.BAD_REQUEST, f"body ended after {len(body)} of {length} bytes")
            return None
        return body

    def _refuse(self, status: HTTPStatus, reason: str) -> None:
        log.warning(
            "refused a webhook from %s: %d %s",
            self.client_address[0],
            status.value,
            reason,
            extra={"http_status": status.value},
        )
        self.close_connection = True
        self._reply(status, {"error": reason})

    def _reply(self, status: HTTPStatus, body: dict[str, object]) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(status.value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
        except (ConnectionError, TimeoutError):
            self.close_connection = True


def serve(
    *,
    host: str,
    port: int,
    store: SqlStore,
    secrets: Sequence[bytes],
    publish: Publish,
    max_bytes: int,
) -> None:
    """Serve until SIGINT/SIGTERM; first print ``RECEIVER LISTENING <url>`` on stdout."""
    server = ReceiverServer(
        host, port, store=store, secrets=secrets, publish=publish, max_bytes=max_bytes
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
    if host not in ("127.0.0.1", "::1", "localhost"):
        print(
            f"receiver: listening on {host}, beyond loopback; only signed events are kept",
            file=sys.stderr,
            flush=True,
        )
    print(f"RECEIVER LISTENING {server.url}{PATH}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
