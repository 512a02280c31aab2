"""Deliver a connection's outbox events, in order, as signed webhooks.

One notifier at a time per connection (a Redis lease), so events of one
connection arrive in the order they were written; an event that fails blocks
the ones behind it until it is delivered or dead. Failures retry with capped
full-jitter backoff for ``webhook_max_age_seconds`` (24 h), then the event is
dead-lettered and shown by `entity-sync events --dead`. Redeliveries keep the
event id, so the receiver can deduplicate.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis

from worker.coordination import redis_keys
from worker.coordination.lease import Lock
from worker.errors import CoordinationError
from worker.logs import connection_log
from worker.outbox.webhooks import WebhookClient, deliver, is_expired, next_attempt_delay
from worker.secrets import SecretBox
from worker.settings import Settings
from worker.store import Connection, Event, EventStatus, SqlStore
from worker.timeutil import canonical, parse_instant


@dataclass(frozen=True)
class Attempt:
    """The outcome of one POST of one event."""

    delivered: bool
    reason: str | None = None
    retryable: bool = True  # False: retrying cannot help until the configuration changes


# (url, signing secrets: the current first, then one still in its rotation window, event)
Send = Callable[[str, Sequence[str], Event], Attempt]

NOTIFY_LEASE_S = 120.0


@dataclass(frozen=True)
class DeliveryReport:
    """What one notifier pass did for one connection."""

    delivered: int = 0
    failed: int = 0
    dead: int = 0
    busy: bool = False  # another notifier holds this connection


def deliver_pending(
    *,
    store: SqlStore,
    cache: redis.Redis,
    secrets: SecretBox,
    settings: Settings,
    connection_id: str,
    send: Send,
    rand: Callable[[], float] = random.random,
) -> DeliveryReport:
    """Deliver the connection's due events in order; stop at the first that fails."""
    holder = uuid.uuid4().hex
    lease = redis_keys.notify_lease(connection_id)
    lock = Lock(cache, ttl_s=NOTIFY_LEASE_S)
    if not lock.take(lease, holder):
        return DeliveryReport(busy=True)
    try:
        connection = store.get_connection(connection_id)
        return _deliver(store, secrets, settings, connection, send, rand)
    finally:
        with contextlib.suppress(CoordinationError):  # else the lease expires by itself
            lock.release(lease, holder)


def _deliver(
    store: SqlStore,
    secrets: SecretBox,
    settings: Settings,
    connection: Connection,
    send: Send,
    rand: Callable[[], float],
) -> DeliveryReport:
    delivered = failed = dead = 0
    url = connection.webhook_url or settings.webhook_default_url
    for event in store.pending_events(connection.id):
        now = datetime.now(UTC)
        if parse_instant(event.next_attempt_at) > now:
            break  # not due yet; those behind it wait to keep the order
        keys = signing_secrets(secrets, settings, connection, now=now)
        if not url or not keys:
            missing = "webhook URL" if not url else "webhook secret"
            _mark(store, event, EventStatus.DEAD, now, error=f"no {missing} configured")
            dead += 1
            continue
        attempt = send(url, keys, event)
        if attempt.delivered:
            _mark(store, event, EventStatus.DELIVERED, now)
            delivered += 1
            continue
        first = parse_instant(event.first_attempt_at) if event.first_attempt_at else now
        too_old = is_expired(first.timestamp(), now.timestamp(), settings.webhook_max_age_seconds)
        if too_old or not attempt.retryable:
            _mark(store, event, EventStatus.DEAD, now, error=attempt.reason)
            dead += 1
            connection_log.error(
                "event dead-lettered after %d attempts: %s",
                event.attempts + 1,
                attempt.reason,
                extra={"connection_id": connection.id, "event_id": event.id},
            )
            continue
        delay = next_attempt_delay(
            event.attempts,
            base_s=settings.webhook_retry_base_seconds,
            cap_s=settings.webhook_retry_cap_seconds,
            rand=rand,
        )
        retry_at = now + timedelta(seconds=max(delay, 1.0))
        _mark(store, event, EventStatus.PENDING, now, error=attempt.reason, retry_at=retry_at)
        failed += 1
        connection_log.warning(
            "webhook delivery failed (attempt %d): %s",
            event.attempts + 1,
            attempt.reason,
            extra={"connection_id": connection.id, "event_id": event.id},
        )
        break  # keep the order: nothing behind it goes first
    return DeliveryReport(delivered=delivered, failed=failed, dead=dead)


def signing_secrets(
    secrets: SecretBox, settings: Settings, connection: Connection, *, now: datetime
) -> list[str]:
    """The secrets that sign a delivery now: the current one first, then the previous
    one while its rotation window lasts (empty: no secret configured).

    A connection's own secret wins over ENTITY_SYNC_WEBHOOK_SECRET. A connection
    that got its first own secret has no previous ciphertext: during its
    window the global secret it was signed with until then is the previous one.
    """
    global_secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    if connection.webhook_secret_ciphertext:
        keys = [secrets.decrypt(connection.webhook_secret_ciphertext)]
        until = connection.webhook_secret_previous_until
        if until is not None and parse_instant(until) > now:
            if connection.webhook_secret_previous_ciphertext:
                keys.append(secrets.decrypt(connection.webhook_secret_previous_ciphertext))
            elif global_secret:
                keys.append(global_secret)
    elif global_secret:
        keys = [global_secret]
        until_at = settings.webhook_secret_previous_until
        if settings.webhook_secret_previous is not None and until_at is not None and until_at > now:
            keys.append(settings.webhook_secret_previous.get_secret_value())
    else:
        return []
    return [key for n, key in enumerate(keys) if key and key not in keys[:n]]


def _mark(
    store: SqlStore,
    event: Event,
    status: EventStatus,
    now: datetime,
    *,
    error: str | None = None,
    retry_at: datetime | None = None,
) -> None:
    store.mark_event(
        event.id,
        status=status,
        attempted_at=canonical(now),
        next_attempt_at=canonical(retry_at) if retry_at else None,
        error=error,
    )


def webhook_sender(client: WebhookClient) -> Send:
    """The real Send: sign the event now and POST it once."""

    def send(url: str, secrets: Sequence[str], event: Event) -> Attempt:
        result = deliver(
            client,
            url,
            secret=secrets[0],
            previous_secrets=secrets[1:],
            event_id=event.id,
            event_type=event.type,
            body=event.body_json.encode(),
            now=int(time.time()),
        )
        return Attempt(result.delivered, result.reason, result.retryable)

    return send


def webhook_client(settings: Settings) -> WebhookClient:
    """A webhook client configured from the settings."""
    return WebhookClient(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.webhook_timeout,
        write_timeout=settings.webhook_timeout,
        deadline_s=2 * settings.webhook_timeout,
        allow_http=settings.webhook_allow_http,
        allow_private=settings.webhook_allow_private,
    )
