"""`entity-sync keygen`, `rotate-key`, `sandbox`, `sandbox-webhook`, `receiver`,
`upstream-events`, `dashboard` and `demo`: keys and the services beside the worker.

`sandbox` and `demo` belong to the test and demo harness (``harness/``) and
forward to it when they run."""

from __future__ import annotations

import argparse
import importlib
import json

from worker.errors import ConfigError, EntitySyncError
from worker.ops.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Handler,
    read_secret,
    store_for,
)
from worker.runtime import Runtime
from worker.secrets import SecretBox, generate_key
from worker.settings import Settings


def cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    from worker.outbox.webhooks import new_secret, standard_form

    if args.standard_form:
        # A secret set before the whsec_ + base64 form: what a Standard Webhooks
        # library needs to verify the deliveries it signs (docs/webhooks.md).
        print(standard_form(read_secret(args, "webhook secret")))
    elif args.webhook:
        print(new_secret())
    else:
        print(generate_key())
    return EXIT_OK


def cmd_rotate_key(args: argparse.Namespace, settings: Settings) -> int:
    box = SecretBox.from_settings(settings)
    store = store_for(settings)
    done: dict[str, int] = {"tokens": 0, "secrets": 0}
    # Each ciphertext is swapped only where it is still the one read (a
    # compare-and-set): a set-token landing in between wins, and its
    # connection is read and rotated again in the next round.
    pending: set[str] | None = None
    for _ in range(5):
        connections = [c for c in store.list_connections() if pending is None or c.id in pending]
        tokens = {
            c.id: (c.token_ciphertext, box.rotate(c.token_ciphertext))
            for c in connections
            if c.token_ciphertext
        }
        secrets = {
            c.id: (c.webhook_secret_ciphertext, box.rotate(c.webhook_secret_ciphertext))
            for c in connections
            if c.webhook_secret_ciphertext
        }
        previous = {
            c.id: (
                c.webhook_secret_previous_ciphertext,
                box.rotate(c.webhook_secret_previous_ciphertext),
            )
            for c in connections
            if c.webhook_secret_previous_ciphertext
        }
        changed = set(
            store.replace_ciphertexts(
                tokens=tokens, webhook_secrets=secrets, previous_webhook_secrets=previous
            )
        )
        done["tokens"] += len(set(tokens) - changed)
        done["secrets"] += len(set(secrets) - changed)
        if not changed:
            break
        pending = changed
    else:
        raise EntitySyncError(
            f"secrets of {', '.join(sorted(pending or ()))} kept changing during the rotation: "
            "run rotate-key again"
        )
    print(f"re-encrypted {done['tokens']} token(s) and {done['secrets']} webhook secret(s)")
    return EXIT_OK


def _harness_command(name: str) -> Handler:
    """A command of the test and demo harness (``harness.cli``), imported only when run.

    The harness is not part of the product (nothing in worker/ imports it, and
    the wheel does not hold it): in a development checkout ``make install``
    installs it; elsewhere these commands say so.
    """
    try:
        module = importlib.import_module("harness.cli")
    except ModuleNotFoundError as exc:
        if exc.name != "harness" and not (exc.name or "").startswith("harness."):
            raise
        raise EntitySyncError(
            f"`entity-sync {name}` runs the test and demo harness, which is not installed "
            "(a development checkout: `make install`)"
        ) from None
    return getattr(module, f"cmd_{name}")  # type: ignore[no-any-return]


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    return _harness_command("sandbox")(args, settings)


def cmd_sandbox_webhook(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    body: dict[str, object] = {"type": args.type, "data": json.loads(args.data or "{}")}
    if args.id:
        body["id"] = args.id
    if args.created_at:
        body["created_at"] = args.created_at
    url = f"{args.sandbox_url.rstrip('/')}/_sandbox/connections/{args.token}/webhooks"
    try:
        answer = httpx.post(url, json=body, timeout=30.0)
    except httpx.HTTPError as exc:
        raise EntitySyncError(f"the sandbox at {args.sandbox_url} did not answer: {exc}") from exc
    print(json.dumps(answer.json(), indent=2))
    return EXIT_OK if answer.status_code == 200 else EXIT_FAILED


def cmd_receiver(args: argparse.Namespace, settings: Settings) -> int:
    from worker.inbound.receiver import Freshness, serve

    secrets = settings.upstream_webhook_secrets()
    if not secrets:
        raise ConfigError(
            "ENTITY_SYNC_UPSTREAM_WEBHOOK_SECRET: not set (the secret the unified API signs "
            "its webhooks with; several, comma-separated, during a rotation)"
        )

    from worker.client import EntitySyncClient
    from worker.jobs import HOUSEKEEPING_QUEUE, UPSTREAM_EVENT

    # The client's send, one attempt: the receiver never builds the worker's app.
    client = EntitySyncClient(settings.effective_broker_url, retry=False)

    def publish(event_id: str) -> None:
        client.send(UPSTREAM_EVENT, {"event_id": event_id}, HOUSEKEEPING_QUEUE)

    from worker.logs import configure

    configure(settings.log_level)
    serve(
        host=args.host or settings.receiver_host,
        port=settings.receiver_port if args.port is None else args.port,
        store=store_for(settings),
        secrets=secrets,
        publish=publish,
        max_bytes=settings.upstream_webhook_max_bytes,
        freshness=Freshness(
            max_age_s=settings.upstream_event_max_age_seconds,
            skew_s=settings.upstream_event_future_skew_seconds,
        ),
    )
    return EXIT_OK


def cmd_upstream_events(args: argparse.Namespace, settings: Settings) -> int:
    from worker.inbound.actions import event_json

    status = "unmapped" if args.unmapped else args.status
    events = store_for(settings).upstream_events(status=status, limit=args.limit)
    if args.json:
        print(json.dumps([event_json(e) for e in events], indent=2))
        return EXIT_OK
    for e in events:
        print(
            f"{e.received_at[:19]}  {e.id:<28} {e.type:<38} {e.upstream_connection_id:<16} "
            f"{e.status:<9} {e.outcome or ''}"
        )
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from worker.ops.dashboard import serve

    runtime = Runtime(settings=settings)
    serve(
        store=runtime.store,
        breaker=runtime.breaker,
        default_interval_s=float(settings.sync_interval_seconds),
        host=args.host or settings.dashboard_host,
        port=args.port or settings.dashboard_port,
        loopback_names_only=args.loopback_names_only,
        socket_timeout_s=settings.dashboard_socket_timeout_seconds,
        request_deadline_s=settings.dashboard_request_deadline_seconds,
        max_connections=settings.dashboard_max_connections,
    )
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    return _harness_command("demo")(args, settings)
