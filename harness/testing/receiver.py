"""A webhook receiver for tests and the fault suite: checks signatures itself, records deliveries.

Both checks are written here from docs/webhooks.md, independently of
``worker.outbox.webhooks``: the Standard Webhooks signature is judged by the
reference ``standardwebhooks`` package (a dev dependency, imported when first
needed), the deprecated ``X-EntitySync-Signature`` by hand.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

STANDARD = "standard"
LEGACY = "legacy"
TOLERANCE_S = 300  # the documented 5 minutes


class Delivery(NamedTuple):
    """One POST as it arrived: headers (names lower-cased) and the raw body."""

    headers: dict[str, str]
    body: bytes


def legacy_ok(secret: str, header: str, body: bytes, now: float | None = None) -> bool:
    """The deprecated header's check as docs/webhooks.md gives it: any one v1 matches."""
    parts = [p.strip().partition("=") for p in header.split(",")]
    stamps = [v for k, _, v in parts if k == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    if abs((time.time() if now is None else now) - int(stamps[0])) > TOLERANCE_S:
        return False
    expected = hmac.new(secret.encode(), stamps[0].encode() + b"." + body, hashlib.sha256)
    return any(hmac.compare_digest(expected.hexdigest(), v) for k, _, v in parts if k == "v1")


def standard_ok(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """The reference ``standardwebhooks`` package's verdict, given ``secret`` as is."""
    from standardwebhooks import Webhook, WebhookVerificationError

    try:
        Webhook(secret).verify(body, dict(headers))
    except WebhookVerificationError:
        return False
    return True


def standard_form(secret: str) -> str:
    """What docs/webhooks.md says to give a Standard Webhooks library for ``secret``.

    A secret in the spec's form (``whsec_`` + standard base64 of 24 to 64
    bytes) is itself; any other is ``whsec_`` + base64 of its UTF-8 bytes.
    """
    if secret.startswith("whsec_"):
        encoded = secret.removeprefix("whsec_")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if 24 <= len(key) <= 64 and base64.b64encode(key).decode() == encoded:
            return secret
    return "whsec_" + base64.b64encode(secret.encode()).decode()


class WebhookReceiver:
    """A local webhook endpoint that checks signatures on its own and records what arrives.

    ``secrets``: a delivery is accepted when one of them verifies it with every
    scheme in ``check`` (both by default; several secrets for rotations). Every
    POST is kept in ``deliveries``; accepted events, parsed, in ``received``.
    ``failing`` makes it answer 503 while true; ``start()`` may come late, to
    model a receiver that is down (connections refused) for a while.
    """

    def __init__(
        self,
        *secrets: str,
        port: int | None = None,
        check: Collection[str] = (STANDARD, LEGACY),
    ) -> None:
        import socket

        if not secrets:
            raise ValueError("a receiver needs at least one secret to check with")
        unknown = set(check) - {STANDARD, LEGACY}
        if unknown:
            raise ValueError(f"unknown signature schemes: {sorted(unknown)}")
        self.secrets = list(secrets)
        self.check = tuple(check)
        if port is None:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hooks/entity-sync"
        self.deliveries: list[Delivery] = []  # every POST, in arrival order
        self.received: list[dict[str, Any]] = []  # accepted, in arrival order
        self.attempts = 0
        self.bad_signatures = 0
        self.failing = False
        self._server: Any = None

    def verifies(self, headers: Mapping[str, str], body: bytes) -> bool:
        """True when one secret verifies the delivery with every checked scheme."""
        legacy_header = headers.get("x-entitysync-signature", "")
        return any(
            (STANDARD not in self.check or standard_ok(standard_form(s), headers, body))
            and (LEGACY not in self.check or legacy_ok(s, legacy_header, body))
            for s in self.secrets
        )

    def start(self) -> WebhookReceiver:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.attempts += 1
                receiver.deliveries.append(Delivery(headers, body))
                if not receiver.verifies(headers, body):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                elif receiver.failing:
                    self.send_response(503)
                else:
                    event = json.loads(body)
                    event["_arrived"] = time.time()
                    event["_header_id"] = headers.get("x-entitysync-event-id")
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
