"""Standard Webhooks: real deliveries verified with the reference ``standardwebhooks`` package.

The shared test receiver keeps each request's headers and raw body; the
package's ``Webhook(secret).verify`` then judges them, as an integrator's code would.
Deliveries go through the real notifier and webhook client, secrets through
the CLI, on both stores.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis

from harness.testing.receiver import WebhookReceiver
from harness.testing.receiver import standard_ok as verifies
from tests.support import Env
from worker.events import EventReason, EventType, build_event
from worker.outbox.notifier import deliver_pending, webhook_client, webhook_sender
from worker.outbox.webhooks import new_secret
from worker.secrets import SecretBox

pytestmark = pytest.mark.integration


def _env(store_url: str, **extra: str) -> Env:
    return Env(
        store_url=store_url,
        upstream_url="http://127.0.0.1:9",
        ENTITY_SYNC_WEBHOOK_ALLOW_HTTP="true",
        ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE="true",
        **extra,
    )


def _deliver(env: Env, client: redis.Redis, cid: str, event_type: EventType) -> str:
    store = env.store()
    event = build_event(event_type, connection_id=cid, entity_type=None, reason=EventReason("auth"))
    store.add_event(event)
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
    return event.id


def test_deliveries_verify_with_the_standardwebhooks_package_during_a_rotation(
    store_url: str, test_redis: redis.Redis, webhook_receiver: Callable[..., WebhookReceiver]
) -> None:
    env = _env(store_url)
    made = env.cli("keygen", "--webhook")
    assert made.returncode == 0, made.stderr
    old = made.stdout.strip()
    new = new_secret()
    assert old.startswith("whsec_") and old != new
    receiver = webhook_receiver(old, new)
    assert env.cli("connections", "add", "c").returncode == 0
    assert (
        env.cli("connections", "set-webhook", "c", receiver.url, "--secret-stdin", stdin=old)
    ).returncode == 0

    event_id = _deliver(env, test_redis, "c", EventType.REAUTHORIZATION_REQUIRED)
    headers, body = receiver.deliveries[-1]
    assert headers["webhook-id"] == event_id
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert verifies(old, headers, body)
    assert not verifies(new, headers, body)
    # The deprecated header still comes along for this release.
    assert headers["x-entitysync-signature"].startswith("t=")

    rotated = env.cli(
        "connections",
        "set-webhook",
        "c",
        receiver.url,
        "--secret-stdin",
        "--rotation-seconds",
        "3",
        stdin=new + "\n",
    )
    assert rotated.returncode == 0, rotated.stderr
    _deliver(env, test_redis, "c", EventType.RECOVERED)
    headers, body = receiver.deliveries[-1]
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verifies(old, headers, body) and verifies(new, headers, body)

    until = env.store().get_connection("c").webhook_secret_previous_until
    assert until is not None
    time.sleep(max(0.0, (datetime.fromisoformat(until) - datetime.now(UTC)).total_seconds()) + 0.2)
    _deliver(env, test_redis, "c", EventType.REAUTHORIZATION_REQUIRED)
    headers, body = receiver.deliveries[-1]
    assert len(headers["webhook-signature"].split(" ")) == 1
    assert verifies(new, headers, body) and not verifies(old, headers, body)

    # A tampered body or a replayed old timestamp is refused by the library.
    assert not verifies(new, headers, body + b" ")
    stale = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 3600)}
    assert not verifies(new, stale, body)


def test_a_legacy_secret_verifies_in_its_standard_form(
    store_url: str, test_redis: redis.Redis, webhook_receiver: Callable[..., WebhookReceiver]
) -> None:
    legacy = "whsec_old_secret_4f1a"  # set before the whsec_ + base64 form
    env = _env(store_url, ENTITY_SYNC_WEBHOOK_SECRET=legacy)
    receiver = webhook_receiver(legacy)
    assert env.cli("connections", "add", "c", "--webhook-url", receiver.url).returncode == 0
    _deliver(env, test_redis, "c", EventType.REAUTHORIZATION_REQUIRED)
    headers, body = receiver.deliveries[-1]
    converted = env.cli("keygen", "--standard-form", stdin=legacy + "\n")
    assert converted.returncode == 0, converted.stderr
    standard = converted.stdout.strip()
    assert standard.startswith("whsec_") and standard != legacy
    assert verifies(standard, headers, body)
    # The spec-form secret maps to itself.
    fresh = new_secret()
    same = env.cli("keygen", "--standard-form", stdin=fresh)
    assert same.stdout.strip() == fresh
