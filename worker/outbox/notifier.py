"""Deliver a connection's outbox events, in order, as signed webhooks.

One notifier at a time per connection (``hold.DeliveryHold``: a Redis lock
renewed before every POST, and a fence in the store that every recorded
outcome must carry), so events of one connection arrive in the order they
were written and none is sent twice by two notifiers. An event that fails
blocks the ones behind it until it is delivered or dead. Failures retry with
capped full-jitter backoff until the event is ``webhook_max_age_seconds``
(24 h) old, counted from its creation (or from an operator's redeliver), then
the event is dead-lettered and shown by `entity-sync events --dead`. A worker
that cannot sign (no webhook secret) leaves the event pending and retries.
Redeliveries keep the event id, so the receiver can deduplicate.

``relay`` asks for a delivery right after an event's commit (best effort): if
the broker is down then, nothing is lost, since the event is in the store and
the periodic sweep (``tasks.notify``) enqueues its delivery later. The caller
passes its way to publish: a worker its app's, the CLI its client's.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis

from worker.errors import SecretError
from worker.events import Event, EventStatus
from worker.jobs import NOTIFY, NOTIFY_QUEUE, Publish
from worker.logs import connection_log, log
from worker.operator_input import MIN_WEBHOOK_SECRET_BYTES
from worker.outbox.hold import DeliveryHold
from worker.outbox.webhooks import WebhookClient, deliver, is_expired, next_attempt_delay
from worker.secrets import SecretBox
from worker.settings import Settings
from worker.store import Connection, SqlStore
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
# The lock outlives the longest POST this many times over: renewed before each
# POST, it cannot expire during one unless the process stalls.
LEASE_PER_POST = 3
# A worker without a signing secret looks again this often (no attempt counted).
NO_SECRET_RETRY_S = 60.0


@dataclass(frozen=True)
class DeliveryReport:
    """What one notifier pass did for one connection."""

    delivered: int = 0
    failed: int = 0
    dead: int = 0
    busy: bool = False  # another notifier holds this connection
    lost: bool = False  # another notifier took over during this pass; it stopped
    no_secret: bool = False  # this worker has no secret to sign with; the event waits
    more: bool = False  # stopped at its time budget with events still due: send another pass


def relay(publish: Publish, connection_id: str) -> None:
    """Enqueue delivery of a connection's pending events."""
    try:
        publish(NOTIFY, {"connection_id": connection_id}, NOTIFY_QUEUE)
    except Exception as exc:  # kombu raises many unrelated types when the broker is away
        log.warning(
            "event relay failed, the sweep will deliver: %s",
            exc,
            extra={"connection_id": connection_id},
        )


def lease_ttl_s(settings: Settings) -> float:
    """The delivery lock's TTL: ``NOTIFY_LEASE_S``, or more for a long webhook timeout."""
    # webhook_client gives a POST at most 2 x webhook_timeout in all.
    return max(NOTIFY_LEASE_S, LEASE_PER_POST * 2 * settings.webhook_timeout)


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
    """Deliver the connection's due events in order; stop at the first that fails.

    A pass ends after ``settings.task_time_budget`` seconds of POSTs (``more``):
    a backlog at a slow endpoint drains over several bounded tasks, each well
    inside the task time limit, instead of one task that the limit kills.
    """
    hold = DeliveryHold(
        store=store,
        cache=cache,
        connection_id=connection_id,
        holder=uuid.uuid4().hex,
        ttl_s=lease_ttl_s(settings),
    )
    if not hold.take():
        return DeliveryReport(busy=True)
    try:
        connection = store.get_connection(connection_id)
        if not _head_is_due(store, connection_id):
            return DeliveryReport()  # the sweep comes often; idle passes write nothing
        hold.raise_fence()
        return _deliver(store, secrets, settings, connection, send, rand, hold)
    finally:
        hold.release()


def _head_is_due(store: SqlStore, connection_id: str) -> bool:
    pending = store.pending_events(connection_id)
    return bool(pending) and parse_instant(pending[0].next_attempt_at) <= datetime.now(UTC)


def _deliver(
    store: SqlStore,
    secrets: SecretBox,
    settings: Settings,
    connection: Connection,
    send: Send,
    rand: Callable[[], float],
    hold: DeliveryHold,
) -> DeliveryReport:
    delivered = failed = dead = 0
    ends_at = time.monotonic() + settings.task_time_budget
    url = connection.webhook_url or settings.webhook_default_url
    log_extra = {"connection_id": connection.id}
    failing: str | None = None  # why the endpoint failed earlier in this pass
    for event in store.pending_events(connection.id):
        now = datetime.now(UTC)
        extra = {**log_extra, "event_id": event.id}
        if parse_instant(event.next_attempt_at) > now:
            break  # not due yet; those behind it wait to keep the order
        expired = is_expired(
            parse_instant(event.requeued_at or event.created_at).timestamp(),
            now.timestamp(),
            settings.webhook_max_age_seconds,
        )
        if not url:
            reason = "no webhook URL configured"
            if not _mark(store, hold, event, EventStatus.DEAD, now, error=reason):
                return _lost(delivered, failed, dead, extra)
            dead += 1
            continue
        if failing is not None and expired:
            # The endpoint failed moments ago and this event's time is up too:
            # a gone endpoint drains its backlog in one pass, not one POST each.
            reason = f"not delivered within the retry window; the endpoint failed: {failing}"
            if not _mark(store, hold, event, EventStatus.DEAD, now, error=reason, attempted=False):
                return _lost(delivered, failed, dead, extra)
            dead += 1
            continue
        keys = _keys_or_none(secrets, settings, connection, now)
        if not keys:
            # A deployment problem of this worker, not of the event: it waits.
            _tell_once("no-secret", connection.id, _UNSIGNABLE, extra, error=True)
            retry_at = now + timedelta(seconds=NO_SECRET_RETRY_S)
            reason = "this worker has no webhook secret to sign with"
            if not _mark(
                store,
                hold,
                event,
                EventStatus.PENDING,
                now,
                error=reason,
                retry_at=retry_at,
                attempted=False,
            ):
                return _lost(delivered, failed, dead, extra)
            return DeliveryReport(delivered=delivered, dead=dead, no_secret=True)
        if not connection.webhook_secret_ciphertext:
            _tell_once("shared-secret", connection.id, _SHARED_KEY_RISK, log_extra)
        elif len(keys[0].encode("utf-8")) < MIN_WEBHOOK_SECRET_BYTES:
            # Below the CLI's minimum, yet stored: it still signs (refusing it would
            # stop delivery), and the operator is told to replace it.
            _tell_once("short-secret", connection.id, _SHORT_KEY, log_extra)
        if time.monotonic() >= ends_at:
            return DeliveryReport(delivered=delivered, dead=dead, more=True)
        if not hold.renew():
            return _lost(delivered, failed, dead, extra)  # stop before a POST
        attempt = send(url, keys, event)
        if attempt.delivered:
            if not _mark(store, hold, event, EventStatus.DELIVERED, now):
                return _lost(delivered, failed, dead, extra)
            delivered += 1
            continue
        failing = attempt.reason or "failed"
        if expired or not attempt.retryable:
            if not _mark(store, hold, event, EventStatus.DEAD, now, error=attempt.reason):
                return _lost(delivered, failed, dead, extra)
            dead += 1
            connection_log.error(
                "event dead-lettered after %d attempts: %s",
                event.attempts + 1,
                attempt.reason,
                extra=extra,
            )
            continue
        delay = next_attempt_delay(
            event.attempts,
            base_s=settings.webhook_retry_base_seconds,
            cap_s=settings.webhook_retry_cap_seconds,
            rand=rand,
        )
        retry_at = now + timedelta(seconds=max(delay, 1.0))
        if not _mark(
            store, hold, event, EventStatus.PENDING, now, error=attempt.reason, retry_at=retry_at
        ):
            return _lost(delivered, failed, dead, extra)
        failed += 1
        connection_log.warning(
            "webhook delivery failed (attempt %d): %s",
            event.attempts + 1,
            attempt.reason,
            extra=extra,
        )
        break  # keep the order: nothing behind it goes first
    return DeliveryReport(delivered=delivered, failed=failed, dead=dead)


def _lost(delivered: int, failed: int, dead: int, extra: dict[str, str]) -> DeliveryReport:
    connection_log.warning(
        "this notifier lost its hold on the connection's deliveries (another took over, "
        "or the connection was removed); it stops before its next POST",
        extra=extra,
    )
    return DeliveryReport(delivered=delivered, failed=failed, dead=dead, lost=True)


def _keys_or_none(
    secrets: SecretBox, settings: Settings, connection: Connection, now: datetime
) -> list[str]:
    """The signing secrets, or none when this worker has none it can use."""
    try:
        return signing_secrets(secrets, settings, connection, now=now)
    except SecretError:
        return []  # its own secret, but not this worker's key: the same as no secret


_UNSIGNABLE = (
    "this worker has no webhook secret to sign this connection's events with "
    "(ENTITY_SYNC_WEBHOOK_SECRET, or the connection's own secret and the "
    "ENTITY_SYNC_SECRET_KEY that opens it): its events stay pending and are retried"
)
_SHARED_KEY_RISK = (
    "this connection has a webhook URL but no signing secret of its own: its events "
    "are signed with ENTITY_SYNC_WEBHOOK_SECRET, which every such connection shares, "
    "so each of their receivers could sign events the others accept; set one with "
    "`entity-sync connections set-webhook ID --secret-stdin` (docs/webhooks.md)"
)
_SHORT_KEY = (
    f"this connection's own webhook secret is shorter than {MIN_WEBHOOK_SECRET_BYTES} bytes, "
    "which one signed delivery lets anyone guess offline; set a new one with "
    "`entity-sync keygen --webhook` and `connections set-webhook ID --secret-stdin`"
)
_told: set[tuple[str, str]] = set()
_told_lock = threading.Lock()


def _tell_once(
    what: str, connection_id: str, message: str, extra: dict[str, str], *, error: bool = False
) -> None:
    """Log ``message`` the first time this process meets it for this connection."""
    with _told_lock:
        if (what, connection_id) in _told:
            return
        _told.add((what, connection_id))
    (connection_log.error if error else connection_log.warning)(message, extra=extra)


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
    hold: DeliveryHold,
    event: Event,
    status: EventStatus,
    now: datetime,
    *,
    error: str | None = None,
    retry_at: datetime | None = None,
    attempted: bool = True,
) -> bool:
    """Record an outcome under this pass's fence; False: another notifier took over."""
    return store.mark_event(
        event.id,
        status=status,
        attempted_at=canonical(now),
        next_attempt_at=canonical(retry_at) if retry_at else None,
        error=error,
        fence=hold.token,
        attempted=attempted,
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
