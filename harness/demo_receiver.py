"""The demo's webhook receiver: verifies each delivery and prints what it got.

It also measures what an integrator cares about: the time from the first 401
the sandbox served to the moment the verified re-authorisation event arrived.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness.testing.sandbox import SandboxHandle
from worker.outbox.webhooks import SIGNATURE_HEADER, verify


class DemoReceiver:
    """A local HTTP endpoint that verifies signatures and prints each event."""

    def __init__(self, secret: str, sandbox: SandboxHandle) -> None:
        self._secret = secret
        self._sandbox = sandbox
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhook"
        self.events: list[dict[str, Any]] = []
        # Connections whose trouble the unified API announced by webhook, and when.
        self._announced: dict[str, float] = {}

    def announced(self, connection_id: str) -> None:
        """The unified API just sent a webhook about this connection (timing the notice)."""
        self._announced[connection_id] = time.time()

    def start(self) -> DemoReceiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(
        self, event_type: str, *, timeout_s: float, connection_id: str | None = None
    ) -> bool:
        """Wait until an event of this type (for this connection) has arrived."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(
                e["type"] == event_type and connection_id in (None, e["connection_id"])
                for e in self.events
            ):
                return True
            time.sleep(0.1)
        return False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                header = self.headers.get(SIGNATURE_HEADER, "")
                ok = verify(receiver._secret, header, body, now=int(time.time()))
                self.send_response(204 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if ok:
                    receiver._arrived(json.loads(body))
                else:
                    print("webhook: REJECTED a delivery with a bad signature", flush=True)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def _arrived(self, event: dict[str, Any]) -> None:
        arrived = time.time()
        self.events.append(event)
        reason = event.get("reason") or {}
        cause = " ".join(str(reason[k]) for k in ("http_status", "code") if reason.get(k))
        line = (
            f"webhook: verified {event['type']} for {event['connection_id']}"
            + (f"/{event['entity_type']}" if event.get("entity_type") else "")
            + (f" ({cause})" if cause else "")
        )
        announced = self._announced.get(str(event["connection_id"]))
        if event["type"] == "connection.reauthorization_required" and announced is not None:
            line += f", {arrived - announced:.2f}s after the unified API's webhook (no 401 needed)"
        elif event["type"] == "connection.reauthorization_required":
            first_401 = self._first_401_wall_time()
            if first_401 is not None:
                line += f", {arrived - first_401:.2f}s after the first 401"
        print(line, flush=True)

    def _first_401_wall_time(self) -> float | None:
        tokens = self._sandbox.stats().get("tokens", {})
        times = [
            datetime.fromisoformat(r["wall"].replace("Z", "+00:00")).timestamp()
            for stats in tokens.values()
            for r in stats.get("requests", [])
            if r.get("status") == 401
        ]
        return min(times) if times else None
