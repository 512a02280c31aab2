"""The HTTP layer: a threading HTTP/1.1 server with keep-alive that sends ``Response``s.

Routing is two prefixes: ``/_sandbox/`` goes to the control API, everything
else to the unified API. This module knows sockets and headers, nothing about
data or faults beyond how to deliver them (latency, trickle, disconnect).
"""

from __future__ import annotations

import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from harness.sandbox.api import ApiRequest, handle_api
from harness.sandbox.config import SandboxConfig
from harness.sandbox.control import PREFIX as CONTROL_PREFIX
from harness.sandbox.control import handle_control
from harness.sandbox.responses import Response
from harness.sandbox.state import Sandbox
from harness.sandbox.webhooks import WebhookTarget

_MAX_BODY = 64 * 1024 * 1024
_TICK_S = 0.1


class SandboxServer(ThreadingHTTPServer):
    """The listening server; holds the ``Sandbox`` and a ticker for timed mutations."""

    daemon_threads = True
    # Do not join handler threads on close: a keep-alive client may hold one forever.
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128  # benchmarks open many connections at once

    def __init__(self, host: str, port: int, sandbox: Sandbox) -> None:
        super().__init__((host, port), _Handler)
        self.sandbox = sandbox
        self.stopping = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="sandbox-ticker", daemon=True)
        self._ticker.start()

    @property
    def url(self) -> str:
        """``http://host:port`` as bound (the real port when 0 was asked)."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def _tick(self) -> None:
        while not self.stopping.wait(_TICK_S):
            self.sandbox.tick()

    def server_close(self) -> None:
        """Stop the ticker and any trickling answers, then close the socket."""
        self.stopping.set()
        super().server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle
    # plus delayed ACKs would add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    server: SandboxServer

    def version_string(self) -> str:
        """The ``Server`` header."""
        return "entity-sync-sandbox"

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence per-request logging: it would dominate benchmark time."""

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is None:
            return
        path = urlsplit(self.path)
        sandbox = self.server.sandbox
        if path.path.startswith(CONTROL_PREFIX):
            self._send(handle_control(sandbox, self.command, path.path, body))
            return
        host = self.headers.get("Host") or self.server.url.removeprefix("http://")
        request = ApiRequest(
            self.command, path.path, path.query, host, self.headers.get("Authorization")
        )
        handled = handle_api(sandbox, request)
        # Counted before sending: a trickled answer may never finish.
        sandbox.stats.record(
            handled.token,
            path.path,
            handled.entity,
            handled.response.status,
            handled.inside_retry_window,
        )
        self._send(handled.response)

    def _read_body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self.send_error(400, "bad Content-Length")
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def _send(self, response: Response) -> None:
        try:
            if response.latency_s > 0:
                time.sleep(response.latency_s)
            if response.disconnect:
                self._drop(reset=response.reset)
                return
            self.send_response(response.status)  # also sends Date and Server
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                self.send_header(name, value)
            self.end_headers()
            if response.trickle_bps is None:
                self.wfile.write(response.body)
            else:
                self._trickle(response.body, 1.0 / response.trickle_bps)
        except (ConnectionError, TimeoutError):
            # The client went away (often on purpose, e.g. after a read timeout).
            self.close_connection = True

    def _trickle(self, body: bytes, pause_s: float) -> None:
        for i in range(len(body)):
            if self.server.stopping.wait(pause_s):
                break
            self.wfile.write(body[i : i + 1])
        self.close_connection = True

    def _drop(self, *, reset: bool) -> None:
        self.close_connection = True
        if reset:
            # Linger 0 makes close() send RST instead of FIN: a "connection reset".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


def start_server(
    host: str, port: int, config: SandboxConfig, webhooks: WebhookTarget | None = None
) -> SandboxServer:
    """Bind and serve in a background thread; stop with ``shutdown()`` + ``server_close()``."""
    server = SandboxServer(host, port, Sandbox(config, webhooks))
    threading.Thread(target=server.serve_forever, name="sandbox-http", daemon=True).start()
    return server


def serve(
    host: str, port: int, config: SandboxConfig, webhooks: WebhookTarget | None = None
) -> None:
    """Serve until SIGINT/SIGTERM; first print ``SANDBOX LISTENING <url>`` on stdout."""
    server = SandboxServer(host, port, Sandbox(config, webhooks))

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
    print(f"SANDBOX LISTENING {server.url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sys.stdout.flush()
