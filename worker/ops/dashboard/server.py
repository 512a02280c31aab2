"""The dashboard's HTTP server: GET and HEAD only, loopback by default.

Routes: ``/`` the page, ``/api/status`` the grid as JSON (problems first;
``?state=&q=&page=&per_page=`` for one filtered page of it), ``/metrics``
Prometheus text, ``/healthz`` whether the store answers. Every other method
is answered 405: there is no endpoint that changes anything. Bound to a
loopback address it also refuses requests whose Host header names another
host, so a web page cannot reach it through DNS rebinding.

A client that connects and says nothing must not hold a thread for ever: each
socket times out after a silence (``socket_timeout_s``), the request line and
headers must arrive within a deadline however they trickle
(``request_deadline_s``), one request is served per connection, and at most
``max_connections`` are served at once; more are closed unanswered (a browser
or a scraper simply asks again).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO, TypeVar
from urllib.parse import parse_qs, urlsplit

from worker.errors import EntitySyncError
from worker.ops.dashboard import metrics
from worker.ops.dashboard.data import Grid, View, build_grid
from worker.ops.dashboard.page import CONTENT_SECURITY_POLICY, PAGE
from worker.resilience.breaker import Breaker
from worker.store import SqlStore
from worker.store.totals import Totals

log = logging.getLogger("entity_sync.dashboard")
T = TypeVar("T")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8901
ALLOWED = "GET, HEAD"
SOCKET_TIMEOUT_S = 10.0  # the longest silence inside a request or its answer
REQUEST_DEADLINE_S = 30.0  # the request line and headers, however they trickle
MAX_CONNECTIONS = 64  # served at once; a page load and a scraper need a handful
REFUSAL_LOG_EVERY_S = 60.0  # one warning per minute, however many are refused


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the dashboard on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere: treat it as exposed


@dataclass
class Dashboard:
    """Builds the grid and the totals, each at most once per ``cache_s`` for all requests.

    Every read of the store runs on one thread of the dashboard's own, which
    keeps its database connection from one refresh to the next: a scrape does
    not pay for a new connection (a new backend process on PostgreSQL, a cold
    page cache on SQLite), and the dashboard holds one connection, not one per
    request thread. /api/status reads the grid only; /metrics the grid and the
    totals.
    """

    store: SqlStore
    breaker: Breaker | None
    default_interval_s: float
    cache_s: float = 2.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-store")
        self._grid: tuple[float, Grid] | None = None
        self._totals: tuple[float, Totals] | None = None
        self.registry = metrics.registry_for(self.snapshot)

    def grid(self) -> Grid:
        """The grid; raises EntitySyncError when the store does not answer."""
        with self._lock:
            if self._grid is None or time.monotonic() - self._grid[0] > self.cache_s:
                grid = self._read(
                    lambda: build_grid(
                        self.store, self.breaker, default_interval_s=self.default_interval_s
                    )
                )
                self._grid = (time.monotonic(), grid)
            return self._grid[1]

    def totals(self) -> Totals:
        """The store's totals; raises EntitySyncError when the store does not answer."""
        with self._lock:
            if self._totals is None or time.monotonic() - self._totals[0] > self.cache_s:
                self._totals = (time.monotonic(), self._read(self.store.totals))
            return self._totals[1]

    def snapshot(self) -> tuple[Grid, Totals]:
        """The grid and totals (/metrics)."""
        return self.grid(), self.totals()

    def _read(self, build: Callable[[], T]) -> T:
        return self._reader.submit(build).result()


class DashboardServer(ThreadingHTTPServer):
    """A threading HTTP server that serves one Dashboard."""

    daemon_threads = True
    block_on_close = False  # closing never waits for a client that says nothing
    # socketserver's default backlog of 5 makes a burst of connections wait
    # seconds for SYN retries before accept can even refuse them.
    request_queue_size = 128

    def __init__(
        self,
        host: str,
        port: int,
        dashboard: Dashboard,
        *,
        loopback_names_only: bool = False,
        socket_timeout_s: float = SOCKET_TIMEOUT_S,
        request_deadline_s: float = REQUEST_DEADLINE_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.dashboard = dashboard
        # Loopback-bound, or told it is reached through a port published on
        # loopback only (a container): refuse Host headers naming other hosts.
        self.loopback = is_loopback(host) or loopback_names_only
        self.socket_timeout_s = socket_timeout_s
        self.request_deadline_s = request_deadline_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._refused = 0
        self._refusal_logged_at = -REFUSAL_LOG_EVERY_S
        super().__init__((host.strip("[]"), port), Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve a connection on a thread of its own, at most ``max_connections`` at once.

        Beyond that it is closed unanswered at once: the accepting thread never
        waits, and idle connections cannot pile up threads.
        """
        if not self._slots.acquire(blocking=False):
            self._note_refusal(client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _note_refusal(self, client_address: Any) -> None:
        # A flood of connections must not become a flood of log lines too.
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= REFUSAL_LOG_EVERY_S:
            log.warning(
                "dashboard: %d connection(s) closed unanswered (too many at once; latest from %s)",
                self._refused,
                client_address[0],
            )
            self._refused, self._refusal_logged_at = 0, now

    @property
    def url(self) -> str:
        host, port = self.server_address[0], self.server_address[1]
        assert isinstance(host, str)  # an IP socket, never AF_UNIX
        shown = f"[{host}]" if self.address_family == socket.AF_INET6 else host
        return f"http://{shown}:{port}/"

    def start(self) -> DashboardServer:
        """Serve on a daemon thread (tests, demos); ``close`` stops it."""
        threading.Thread(target=self.serve_forever, name="dashboard", daemon=True).start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    """Answers GET and HEAD on the four routes; 405 to anything else."""

    server: DashboardServer
    server_version = "entity-sync-dashboard"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive

    def setup(self) -> None:
        # Every read and write then fails after that long a silence instead of
        # waiting for ever (the base class answers a timed-out request by closing).
        self.request.settimeout(self.server.socket_timeout_s)
        super().setup()
        # The socket timeout bounds each silence; this bounds the whole request,
        # so a client sending a byte every few seconds cannot hold a thread.
        self._deadline = threading.Timer(self.server.request_deadline_s, self._cut)
        self._deadline.daemon = True
        self._deadline.start()

    def parse_request(self) -> bool:
        # It reads the headers; once they are in, the answer (which may wait
        # for the store) is bounded by the socket timeout, not the deadline.
        parsed = super().parse_request()
        self._deadline.cancel()
        return parsed

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def _cut(self) -> None:
        log.info(
            "dashboard: dropped a connection from %s: no request in time", self.client_address[0]
        )
        with contextlib.suppress(OSError):  # closed meanwhile
            self.connection.shutdown(socket.SHUT_RDWR)

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The base class answers 501 to a method it has no do_* for: that is
        # every method but GET and HEAD, and the honest answer is 405.
        if code == HTTPStatus.NOT_IMPLEMENTED and self.command not in ("GET", "HEAD"):
            self.close_connection = True
            self._send(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                b"405 method not allowed: the dashboard is read-only (GET and HEAD only)\n",
                head=False,
                extra={"Allow": ALLOWED},
            )
            return
        super().send_error(code, message, explain)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _answer(self, *, head: bool) -> None:
        if not self._host_allowed():
            body = b"403 forbidden: this dashboard answers to loopback host names only\n"
            self._send(HTTPStatus.FORBIDDEN, "text/plain; charset=utf-8", body, head=head)
            return
        path = urlsplit(self.path).path
        try:
            self._route(path, head=head)
        except EntitySyncError as exc:
            log.warning("dashboard: the store did not answer: %s", exc)
            body = f"503 unavailable: {exc}\n".encode()
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", body, head)

    def _route(self, path: str, *, head: bool) -> None:
        if path in ("/", "/index.html"):
            extra = {"Content-Security-Policy": CONTENT_SECURITY_POLICY}
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", PAGE.encode(), head, extra)
        elif path == "/api/status":
            grid = self.server.dashboard.grid()
            view = View.parse(parse_qs(urlsplit(self.path).query))
            self._send(HTTPStatus.OK, "application/json", _json(grid.as_json(view)), head)
        elif path == "/metrics":
            text = metrics.render(metrics.families(*self.server.dashboard.snapshot()))
            self._send(HTTPStatus.OK, metrics.CONTENT_TYPE, text, head)
        elif path == "/healthz":
            self.server.dashboard.grid()
            self._send(HTTPStatus.OK, "text/plain; charset=utf-8", b"ok\n", head)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"404 not found\n", head)

    def _host_allowed(self) -> bool:
        host = self.headers.get("Host")
        if not self.server.loopback or not host:
            return True
        name = urlsplit(f"//{host}").hostname or ""
        return is_loopback(name)

    def _send(
        self,
        status: HTTPStatus,
        content_type: str,
        body: bytes,
        head: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
        }
        for name, value in (headers | (extra or {})).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _json(body: object) -> bytes:
    # Strings from customers and upstreams stay inert even if a browser were
    # talked into reading this as HTML: no raw <, > or & leave the server.
    text = json.dumps(body, ensure_ascii=False)
    text = text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    return text.encode()


def serve(
    *,
    store: SqlStore,
    breaker: Breaker | None,
    default_interval_s: float,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    out: TextIO = sys.stderr,
    loopback_names_only: bool = False,
    socket_timeout_s: float = SOCKET_TIMEOUT_S,
    request_deadline_s: float = REQUEST_DEADLINE_S,
    max_connections: int = MAX_CONNECTIONS,
) -> None:
    """Serve the dashboard until interrupted, saying where (and warning when exposed).

    ``loopback_names_only``: bound to every address of a container whose port
    is published on the host's loopback only; requests must still name a
    loopback host, as they must when the dashboard itself is bound to loopback.
    """
    dashboard = Dashboard(store, breaker, default_interval_s)
    server = DashboardServer(
        host,
        port,
        dashboard,
        loopback_names_only=loopback_names_only,
        socket_timeout_s=socket_timeout_s,
        request_deadline_s=request_deadline_s,
        max_connections=max_connections,
    )
    if loopback_names_only and not is_loopback(host):
        print(
            f"the dashboard is bound to {host} and answers only requests naming a loopback "
            "host: publish its port on 127.0.0.1 only (docker-compose.yml does).",
            file=out,
        )
    elif not server.loopback:
        print(
            f"WARNING: the dashboard is bound to {host}, not to loopback: anyone who can "
            "reach this port can read every connection's status and last errors (there is "
            "no authentication). Bind to 127.0.0.1 or put an authenticating proxy in front.",
            file=out,
        )
    print(f"entity-sync dashboard (read-only) at {server.url}; Ctrl-C stops", file=out)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
