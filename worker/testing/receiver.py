"""A webhook receiver for tests and the fault suite: checks signatures itself, records events."""

from __future__ import annotations

import time
from typing import Any


class WebhookReceiver:
    """A local webhook endpoint that checks signatures on its own and records events.

    The check is written here from the documented scheme (HMAC-SHA256 over
    ``"<t>." + body``), independently of ``worker.outbox.webhooks``. ``failing`` makes
    it answer 503 while true; ``start()`` may come late, to model a receiver
    that is down (connections refused) for a while.
    """

    def __init__(self, secret: str, port: int | None = None) -> None:
        import socket

        self.secret = secret
        if port is None:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hooks/entity-sync"
        self.received: list[dict[str, Any]] = []  # accepted, in arrival order
        self.attempts = 0
        self.bad_signatures = 0
        self.failing = False
        self._server: Any = None

    def start(self) -> WebhookReceiver:
        import hashlib
        import hmac
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.attempts += 1
                header = self.headers.get("X-EntitySync-Signature", "")
                parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
                expected = hmac.new(
                    receiver.secret.encode(), f"{parts.get('t')}.".encode() + body, hashlib.sha256
                ).hexdigest()
                fresh = abs(time.time() - int(parts.get("t", "0"))) < 300
                if not (fresh and hmac.compare_digest(expected, parts.get("v1", ""))):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                elif receiver.failing:
                    self.send_response(503)
                else:
                    event = json.loads(body)
                    event["_arrived"] = time.time()
                    event["_header_id"] = self.headers.get("X-EntitySync-Event-Id")
                    receiver.received.append(event)
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e["type"] == event_type]
