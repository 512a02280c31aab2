"""The webhooks the unified API sends (docs/upstream-api.md), sent by the sandbox.

A ``WebhookSender`` posts each event as JSON to one URL, signed with
``X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the body>``, waits 10 s for
a 2xx and tries again (three attempts) otherwise, as the contract describes.
Events go out in order from one background thread; ``send_now`` sends one
and returns the receiver's status (the control API's "emit one now").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

TIMEOUT_S = 10.0
ATTEMPTS = 3
MAX_LOGGED = 1000


@dataclass(frozen=True)
class WebhookTarget:
    """Where the sandbox sends its webhooks and the secret it signs them with."""

    url: str
    secret: str


def build_event(
    event_type: str,
    connection_id: str,
    data: dict[str, Any],
    *,
    event_id: str | None = None,
    created_at: str | None = None,
) -> dict[str, Any]:
    """One event in the contract's shape."""
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "type": event_type,
        "created_at": created_at
        or datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "connection_id": connection_id,
        "data": data,
    }


class WebhookSender:
    """Signs and posts events to one target, in order, from a background thread."""

    def __init__(self, target: WebhookTarget) -> None:
        self.target = target
        self._client = httpx.Client(timeout=TIMEOUT_S, follow_redirects=False)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._lock = threading.Lock()
        self.log: deque[dict[str, Any]] = deque(maxlen=MAX_LOGGED)
        self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
        self._thread.start()

    def enqueue(self, event: dict[str, Any]) -> None:
        """Send in the background (retried); never blocks the caller."""
        self._queue.put(event)

    def send_now(self, event: dict[str, Any]) -> int:
        """Send one event now, once; returns the answer's status (0: no answer)."""
        return self._post(event, attempt=1)

    def sent(self) -> list[dict[str, Any]]:
        """What was sent, oldest first: id, type, status, attempt."""
        with self._lock:
            return list(self.log)

    def close(self) -> None:
        self._queue.put(None)
        self._client.close()

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            for attempt in range(1, ATTEMPTS + 1):
                if 200 <= self._post(event, attempt=attempt) < 300:
                    break
                time.sleep(min(4.0, 0.5 * 2**attempt))

    def _post(self, event: dict[str, Any], *, attempt: int) -> int:
        body = json.dumps(event, separators=(",", ":")).encode()
        signature = hmac.new(self.target.secret.encode(), body, hashlib.sha256).hexdigest()
        try:
            status = self._client.post(
                self.target.url,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Webhook-Signature": f"sha256={signature}",
                },
            ).status_code
        except (httpx.HTTPError, RuntimeError):  # RuntimeError: the client was closed
            status = 0
        with self._lock:
            self.log.append(
                {"id": event["id"], "type": event["type"], "status": status, "attempt": attempt}
            )
        return status
