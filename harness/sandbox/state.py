"""The whole sandbox: connections by token, the config they came from, and stats."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from harness.sandbox.config import ConnectionSpec, SandboxConfig, ScenarioSpec
from harness.sandbox.connection import Connection
from harness.sandbox.stats import Stats
from harness.sandbox.webhooks import WebhookSender, WebhookTarget, build_event


class UnknownToken(LookupError):
    """No connection answers to that token."""


class Sandbox:
    """Thread-safe registry of connections; every control operation goes through it."""

    def __init__(self, config: SandboxConfig, webhooks: WebhookTarget | None = None) -> None:
        self._lock = threading.Lock()
        self._request_ids = itertools.count(1)
        self.stats = Stats()
        self.webhooks: WebhookSender | None = None
        self.load(config)
        if webhooks is not None:
            self.set_webhook_target(webhooks)

    # -- the unified API's webhooks ---------------------------------------------------

    def set_webhook_target(self, target: WebhookTarget | None) -> None:
        """Send webhooks to ``target`` from now on (None: stop sending)."""
        old, self.webhooks = self.webhooks, (WebhookSender(target) if target else None)
        if old is not None:
            old.close()
        with self._lock:
            connections = list(self._connections.values())
        for conn in connections:
            self._wire(conn)

    def _wire(self, conn: Connection) -> None:
        sender = self.webhooks

        def emit(event_type: str, data: dict[str, Any]) -> None:
            if sender is not None:
                sender.enqueue(build_event(event_type, conn.spec.connection_id(), data))

        conn.emit = emit if sender is not None else None

    def emit_now(
        self,
        token: str,
        event_type: str,
        data: dict[str, Any],
        *,
        event_id: str | None = None,
        created_at: str | None = None,
    ) -> tuple[dict[str, Any], int]:
        """Send one webhook of a connection now; returns the event and the answer's status."""
        conn = self.require(token)
        sender = self.webhooks
        if sender is None:
            raise ValueError(
                "no webhook target: start with --webhook-url or PUT /_sandbox/webhooks"
            )
        event = build_event(
            event_type,
            conn.spec.connection_id(),
            data,
            event_id=event_id,
            created_at=created_at,
        )
        return event, sender.send_now(event)

    def revoke(self, token: str) -> dict[str, Any] | None:
        """The customer's credentials changed: 401 from now on, and (with a target) the
        re-authorisation webhook; returns the event sent, if any."""
        conn = self.require(token)
        with conn.lock:
            conn.faults.revoke()
        if self.webhooks is None:
            return None
        event, _ = self.emit_now(
            token,
            "connection.reauthorization_required",
            {"reason": "credentials changed in source system"},
        )
        return event

    def load(self, config: SandboxConfig) -> None:
        """Replace the whole config: fresh data, clocks, counters and stats."""
        data_end = config.data_end_us()
        connections = {t: Connection(spec, data_end) for t, spec in config.connections.items()}
        for conn in connections.values():
            self._wire(conn)
        with self._lock:
            self._data_end = data_end
            self._data_end_text = config.data_end
            self._connections = connections
        self.stats.reset()

    def config(self) -> SandboxConfig:
        """The current config, with rotated tokens and replaced scenarios applied."""
        with self._lock:
            specs = {t: c.spec for t, c in self._connections.items()}
            return SandboxConfig(data_end=self._data_end_text, connections=specs)

    def connection(self, token: str) -> Connection | None:
        """The connection a token reaches, if any."""
        with self._lock:
            return self._connections.get(token)

    def require(self, token: str) -> Connection:
        """Like ``connection`` but raises ``UnknownToken``."""
        found = self.connection(token)
        if found is None:
            raise UnknownToken(token)
        return found

    def put_connection(self, token: str, spec: ConnectionSpec) -> None:
        """Add or replace one connection, with fresh data and clocks."""
        fresh = Connection(spec, self._data_end)
        self._wire(fresh)
        with self._lock:
            self._connections[token] = fresh

    def set_scenarios(self, token: str, scenarios: list[ScenarioSpec]) -> None:
        """Replace a connection's scenarios and restart their clock; data is kept."""
        conn = self.require(token)
        with conn.lock:
            conn.spec = conn.spec.model_copy(update={"scenarios": scenarios})
            conn.faults.restart(scenarios)

    def rotate(self, token: str, new_token: str) -> None:
        """Re-authorise: the connection answers only to ``new_token`` and its 401 latch lifts."""
        with self._lock:
            conn = self._connections.get(token)
            if conn is None:
                raise UnknownToken(token)
            if new_token != token and new_token in self._connections:
                raise ValueError(f"token {new_token!r} is already in use")
            del self._connections[token]
            self._connections[new_token] = conn
        with conn.lock:
            conn.faults.clear_auth()

    def next_request_id(self) -> str:
        """A short unique id for error bodies and the ``X-Request-Id`` header."""
        return f"req_{next(self._request_ids):06x}"

    def tick(self) -> None:
        """Run due time-driven mutations of every connection."""
        with self._lock:
            connections = list(self._connections.values())
        now = time.monotonic()
        for conn in connections:
            conn.tick(now)
