"""Webhook secret rotation: during the window the old and the new secret both sign.

The shared test receiver records what arrives; each delivery's deprecated
header is then checked the way docs/webhooks.md tells integrators to, once
with the old secret and once with the new one. Deliveries go through the
real notifier and webhook client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from harness.testing.receiver import WebhookReceiver
from harness.testing.receiver import legacy_ok as accepts
from tests.support import Env
from worker.events import EventReason, EventType, build_event
from worker.outbox.notifier import deliver_pending, webhook_client, webhook_sender
from worker.secrets import SecretBox

pytestmark = pytest.mark.integration

OLD, NEW = "whsec_old_secret_4f1a", "whsec_new_secret_9b2c"


def _deliver(env: Env, client: redis.Redis, cid: str, event_type: EventType) -> None:
    store = env.store()
    store.add_event(
        build_event(event_type, connection_id=cid, entity_type=None, reason=EventReason("auth"))
    )
    settings = env.settings()
    with webhook_client(settings) as http:
        report = deliver_pending(
            store=store,
            cache=client,
            secrets=SecretBox(env.vars["ENTITY_SYNC_SECRET_KEY"]),
            settings=settings,
            connection_id=cid,
            send=webhook_sender(http),
        )
    assert report.delivered == 1, report


def _last(receiver: WebhookReceiver) -> tuple[str, bytes]:
    """The last delivery's deprecated signature header and raw body."""
    headers, body = receiver.deliveries[-1]
    return headers["x-entitysync-signature"], body


def _env(store_url: str, **extra: str) -> Env:
    return Env(
        store_url=store_url,
        upstream_url="http://127.0.0.1:9",
        ENTITY_SYNC_WEBHOOK_ALLOW_HTTP="true",
        ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE="true",
        **extra,
    )


def test_both_secrets_sign_during_a_connections_rotation_window(
    store_url: str, test_redis: redis.Redis, webhook_receiver: Callable[..., WebhookReceiver]
) -> None:
    env = _env(store_url)
    receiver = webhook_receiver(OLD, NEW)
    assert env.cli("connections", "add", "c").returncode == 0
    first = env.cli("connections", "set-webhook", "c", receiver.url, "--secret-stdin", stdin=OLD)
    assert first.returncode == 0, first.stderr
    rotated = env.cli(
        "connections",
        "set-webhook",
        "c",
        receiver.url,
        "--secret-stdin",
        "--rotation-seconds",
        "3",
        stdin=NEW + "\n",
    )
    assert rotated.returncode == 0, rotated.stderr
    assert "previous one also signs until" in rotated.stdout
    assert OLD not in rotated.stdout + rotated.stderr and NEW not in rotated.stdout

    _deliver(env, test_redis, "c", EventType.REAUTHORIZATION_REQUIRED)
    header, body = _last(receiver)
    assert header.count("v1=") == 2
    assert accepts(OLD, header, body) and accepts(NEW, header, body)

    until = env.store().get_connection("c").webhook_secret_previous_until
    assert until is not None
    time.sleep(max(0.0, (datetime.fromisoformat(until) - datetime.now(UTC)).total_seconds()) + 0.2)
    _deliver(env, test_redis, "c", EventType.RECOVERED)
    header, body = _last(receiver)
    assert header.count("v1=") == 1
    assert accepts(NEW, header, body) and not accepts(OLD, header, body)

    # Setting the same secret again starts no window; a window of 0 drops the old one.
    again = env.cli(
        "connections",
        "set-webhook",
        "c",
        receiver.url,
        "--secret-stdin",
        "--rotation-seconds",
        "0",
        stdin=OLD,
    )
    assert again.returncode == 0, again.stderr
    _deliver(env, test_redis, "c", EventType.REAUTHORIZATION_REQUIRED)
    header, body = _last(receiver)
    assert accepts(OLD, header, body) and not accepts(NEW, header, body)


def test_a_first_own_secret_keeps_the_global_one_signing_for_the_window(
    store_url: str, test_redis: redis.Redis, webhook_receiver: Callable[..., WebhookReceiver]
) -> None:
    env = _env(store_url, ENTITY_SYNC_WEBHOOK_SECRET=OLD)
    receiver = webhook_receiver(OLD, NEW)
    assert env.cli("connections", "add", "c", "--webhook-url", receiver.url).returncode == 0
    own = env.cli("connections", "set-webhook", "c", receiver.url, "--secret-stdin", stdin=NEW)
    assert own.returncode == 0, own.stderr
    _deliver(env, test_redis, "c", EventType.REAUTHORIZATION_REQUIRED)
    header, body = _last(receiver)
    assert accepts(OLD, header, body) and accepts(NEW, header, body)


def test_both_global_secrets_sign_until_the_configured_end(
    store_url: str, test_redis: redis.Redis, webhook_receiver: Callable[..., WebhookReceiver]
) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    env = _env(
        store_url,
        ENTITY_SYNC_WEBHOOK_SECRET=NEW,
        ENTITY_SYNC_WEBHOOK_SECRET_PREVIOUS=OLD,
        ENTITY_SYNC_WEBHOOK_SECRET_PREVIOUS_UNTIL=soon.isoformat().replace("+00:00", "Z"),
    )
    receiver = webhook_receiver(OLD, NEW)
    assert env.cli("connections", "add", "c", "--webhook-url", receiver.url).returncode == 0
    _deliver(env, test_redis, "c", EventType.REAUTHORIZATION_REQUIRED)
    header, body = _last(receiver)
    assert accepts(OLD, header, body) and accepts(NEW, header, body)

    env.vars["ENTITY_SYNC_WEBHOOK_SECRET_PREVIOUS_UNTIL"] = "2020-01-01T00:00:00Z"
    _deliver(env, test_redis, "c", EventType.RECOVERED)
    header, body = _last(receiver)
    assert accepts(NEW, header, body) and not accepts(OLD, header, body)


def test_a_previous_global_secret_needs_an_end(tmp_path: Any) -> None:
    env = _env(
        f"sqlite:///{tmp_path}/store.db",
        ENTITY_SYNC_WEBHOOK_SECRET=NEW,
        ENTITY_SYNC_WEBHOOK_SECRET_PREVIOUS=OLD,
    )
    result = env.cli("status")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "ENTITY_SYNC_WEBHOOK_SECRET_PREVIOUS_UNTIL" in result.stderr
    assert OLD not in result.stderr
    env.vars["ENTITY_SYNC_WEBHOOK_SECRET_PREVIOUS_UNTIL"] = "2099-12-01T00:00:00"
    naive = env.cli("status")
    assert naive.returncode == 2 and "WEBHOOK_SECRET_PREVIOUS_UNTIL" in naive.stderr
    del env.vars["ENTITY_SYNC_WEBHOOK_SECRET_PREVIOUS"]
    del env.vars["ENTITY_SYNC_WEBHOOK_SECRET_PREVIOUS_UNTIL"]
    assert env.cli("connections", "add", "x").returncode == 0
    bad = env.cli(
        "connections", "set-webhook", "x", "http://127.0.0.1:9/h", "--rotation-seconds", "-1"
    )
    assert bad.returncode == 2 and "--rotation-seconds" in bad.stderr, bad.stderr
