"""`entity-sync connections ...` and `schema`: the registry of connections."""

from __future__ import annotations

import argparse
import json
import sys

from worker.errors import EntitySyncError
from worker.jobs import is_valid_connection_id
from worker.operator_input import (
    InvalidInput,
    check_interval,
    check_limits,
    check_webhook_secret,
)
from worker.ops.cli.common import (
    ENTITY_CHOICES,
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    read_secret,
    read_token,
    read_webhook_url,
    shown_url,
    store_for,
    upstream_url_arg,
)
from worker.resilience.breaker_types import Actor
from worker.runtime import Runtime
from worker.secrets import SecretBox
from worker.settings import Settings
from worker.store import Connection


def _webhook_url(url: str | None, settings: Settings) -> str | None:
    """The URL if it is a safe webhook destination, else UsageError saying why."""
    from worker.outbox.destinations import InvalidWebhookUrl, validate_webhook_url

    if url is None:
        return None
    try:
        return validate_webhook_url(
            url,
            allow_http=settings.webhook_allow_http,
            allow_private=settings.webhook_allow_private,
        )
    except InvalidWebhookUrl as exc:
        raise UsageError(f"webhook URL refused: {exc}") from None


def cmd_connections_add(args: argparse.Namespace, settings: Settings) -> int:
    if not is_valid_connection_id(args.id):
        raise UsageError("a connection id is 1-128 letters, digits, '.', '_' or '-'")
    webhook_url = _webhook_url(
        read_webhook_url(args, stdin_taken_by="--token-stdin" if args.token_stdin else None),
        settings,
    )
    upstream_url = upstream_url_arg(args.upstream_url)
    box = SecretBox.from_settings(settings)
    token = read_token(args) if (args.token_file or args.token_stdin) else None
    store_for(settings).add_connection(
        Connection(
            id=args.id,
            name=args.name or args.id,
            entity_types=tuple(args.entity or ENTITY_CHOICES),
            upstream_url=upstream_url,
            webhook_url=webhook_url,
            token_ciphertext=box.encrypt(token) if token else None,
        )
    )
    print(f"connection {args.id} added" + ("" if token else " (no token yet: set-token)"))
    if webhook_url:
        _warn_about_signing(settings, own_secret=False)
    return EXIT_OK


def _warn_about_signing(settings: Settings, *, own_secret: bool) -> None:
    """Say on stderr when a connection's events go out without a secret of its own."""
    if own_secret:
        return
    if settings.webhook_secret is None:
        print(
            "warning: no signing secret: its events wait, undelivered, until it has one "
            "(set-webhook --secret-stdin) or ENTITY_SYNC_WEBHOOK_SECRET is set",
            file=sys.stderr,
        )
        return
    print(
        "warning: its events are signed with ENTITY_SYNC_WEBHOOK_SECRET, which every "
        "connection without a secret of its own shares: each of their receivers could "
        "forge events the others accept; give it its own with "
        "`entity-sync connections set-webhook ID --secret-stdin` (docs/webhooks.md)",
        file=sys.stderr,
    )


def _connection_json(connection: Connection) -> dict[str, object]:
    return {
        "id": connection.id,
        "name": connection.name,
        "entity_types": list(connection.entity_types),
        "upstream_url": connection.upstream_url,
        "webhook_url": connection.webhook_url,
        # False: signed with ENTITY_SYNC_WEBHOOK_SECRET, shared by all such connections.
        "has_own_webhook_secret": bool(connection.webhook_secret_ciphertext),
        "has_token": bool(connection.token_ciphertext),
        "token_version": connection.token_version,
        "created_at": connection.created_at,
        "updated_at": connection.updated_at,
    }


def cmd_connections_list(args: argparse.Namespace, settings: Settings) -> int:
    connections = store_for(settings).list_connections()
    if args.json:
        print(json.dumps([_connection_json(c) for c in connections], indent=2))
        return EXIT_OK
    for c in connections:
        token = "token set" if c.token_ciphertext else "NO TOKEN"
        print(f"{c.id:<24} {c.name:<28} {len(c.entity_types)} entity types  {token}")
    return EXIT_OK


def cmd_connections_show(args: argparse.Namespace, settings: Settings) -> int:
    store = store_for(settings)
    shown = _connection_json(store.get_connection(args.id))
    shown["webhook_events"] = store.webhook_events(args.id)
    shown["reconcile_interval_s"] = store.reconcile_intervals().get(args.id)
    # The unified API's id of it, learned at a preflight: its webhooks name it so,
    # and only webhooks from that base URL's API (worker/store/upstream_ids.py).
    mapping = store.upstream_mapping(args.id)
    shown["upstream_connection_id"] = mapping.upstream_id if mapping else None
    shown["upstream_base_url"] = mapping.base_url if mapping else None
    if mapping is not None and mapping.refused_id is not None:
        shown["upstream_id_refused"] = {
            "id": mapping.refused_id,
            "mapped_to": mapping.holder,
            "why": "another connection reported this id at the same base URL first; "
            "webhooks naming it are applied to that connection only",
        }
    shown["upstream_id_also_reported_by"] = [
        r.connection_id for r in store.upstream_id_refusals() if r.holder == args.id
    ]
    print(json.dumps(shown, indent=2))
    return EXIT_OK


def cmd_connections_remove(args: argparse.Namespace, settings: Settings) -> int:
    from worker.ops.removal import remove_connection

    deleted = remove_connection(store_for(settings), Runtime(settings=settings).redis, args.id)
    print(
        f"connection {args.id} removed with everything kept for it "
        f"({deleted['records']} records, {deleted['runs']} runs, "
        f"{deleted['redis_keys']} Redis keys)"
    )
    return EXIT_OK


def cmd_connections_set_token(args: argparse.Namespace, settings: Settings) -> int:
    from worker.client import EntitySyncClient
    from worker.sync.recovery import resume_connection

    box = SecretBox.from_settings(settings)
    store = store_for(settings)
    store.get_connection(args.id)
    version = store.set_token(args.id, box.encrypt(read_token(args)))
    print(f"token of {args.id} replaced (version {version})")
    try:
        rt = Runtime(settings=settings)
        if resume_connection(
            args.id,
            "new token",
            breaker=rt.breaker,
            client=rt.redis,
            transitions=lambda change: rt.transitions(change),  # opens the store if needed
            actor=Actor.OPERATOR,
        ):
            print(f"connection {args.id} was halted and is resumed")
        request_id = EntitySyncClient(settings.effective_broker_url).sync_connection(
            args.id, trigger="recovery"
        )
    except EntitySyncError as exc:
        print(f"warning: token stored, but the resume did not go through: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"sync of {args.id} enqueued (request {request_id})")
    return EXIT_OK


def cmd_connections_set_webhook(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime, timedelta

    from worker.timeutil import canonical

    store = store_for(settings)
    connection = store.get_connection(args.id)
    url = _webhook_url(
        read_webhook_url(args, stdin_taken_by="--secret-stdin" if args.secret_stdin else None),
        settings,
    )
    if url is None:
        raise UsageError("give the webhook URL: as an argument, --webhook-url-stdin or -file")
    window = settings.webhook_secret_rotation_seconds
    if args.rotation_seconds is not None:
        if not 0 <= args.rotation_seconds <= 30 * 86_400:
            raise UsageError("--rotation-seconds must be 0..2592000 (30 days)")
        window = args.rotation_seconds
    secret = until = None
    note = ""
    if args.secret_stdin:
        box = SecretBox.from_settings(settings)
        try:
            plaintext = check_webhook_secret(read_secret(args, "webhook secret"))
        except InvalidInput as exc:
            raise UsageError(str(exc)) from None
        before = (
            box.decrypt(connection.webhook_secret_ciphertext)
            if connection.webhook_secret_ciphertext
            else (settings.webhook_secret.get_secret_value() if settings.webhook_secret else None)
        )
        secret = box.encrypt(plaintext)
        note = " (own signing secret)"
        if before is not None and before != plaintext and window > 0:
            until = canonical(datetime.now(UTC) + timedelta(seconds=window))
            note = f" (own signing secret; the previous one also signs until {until})"
        elif before == plaintext and connection.webhook_secret_previous_until:
            until = connection.webhook_secret_previous_until  # the same secret: no new window
            secret = None
    events = _opt_in_events(args.events) if args.events is not None else None
    store.set_webhook(args.id, url=url, secret_ciphertext=secret, previous_until=until)
    if events is not None:
        store.set_webhook_events(args.id, events)
    print(f"webhook of {args.id}: {shown_url(url)}{note}")
    _warn_about_signing(settings, own_secret=bool(secret or connection.webhook_secret_ciphertext))
    chosen = store.webhook_events(args.id)
    print(
        "events: connection and entity state changes"
        + (f", {', '.join(chosen)}" if chosen else " (no opt-in events)")
    )
    return EXIT_OK


def _opt_in_events(value: str) -> list[str]:
    """``--events``: a comma-separated list of opt-in event types, or ``none``."""
    from worker.events import OPT_IN_EVENTS, EventType

    names = [part.strip() for part in value.split(",") if part.strip()]
    if names == ["none"]:
        return []
    known = sorted(e.value for e in OPT_IN_EVENTS)
    always = {e.value for e in EventType} - set(known)
    for name in names:
        if name in always:
            raise UsageError(
                f"--events: {name} is always delivered; list only opt-in events "
                f"({', '.join(known)}) or 'none'"
            )
        if name not in known:
            raise UsageError(
                f"--events: unknown event type {name!r} (opt-in events: {', '.join(known)}; "
                "or 'none')"
            )
    if not names:
        raise UsageError("--events: name at least one event type, or 'none'")
    return names


def cmd_connections_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from worker.operator_input import check_reconcile_interval

    store = store_for(settings)
    store.get_connection(args.id)
    if args.default or args.every is not None:
        try:
            seconds = None if args.default else check_reconcile_interval(args.every)
        except InvalidInput as exc:
            raise UsageError(str(exc)) from None
        store.set_reconcile_interval(args.id, seconds)
    own = store.reconcile_intervals().get(args.id)
    shown = f"{own}s" if own else f"the default ({settings.reconcile_interval_seconds}s)"
    print(f"{args.id} is read in full to find deletions every {shown}")
    return EXIT_OK


def cmd_connections_interval(args: argparse.Namespace, settings: Settings) -> int:
    store = store_for(settings)
    try:
        check_interval(args.seconds)
    except InvalidInput as exc:
        raise UsageError(str(exc)) from None
    store.set_interval(args.id, args.seconds)
    shown = (
        f"{args.seconds}s" if args.seconds else f"the default ({settings.sync_interval_seconds}s)"
    )
    print(f"{args.id} syncs every {shown}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    from worker.jobs import SYNC_CONNECTION, SYNC_ENTITY, SyncConnectionJob, SyncEntityJob

    schemas = {
        SYNC_CONNECTION: SyncConnectionJob.model_json_schema(),
        SYNC_ENTITY: SyncEntityJob.model_json_schema(),
    }
    print(json.dumps(schemas, indent=2))
    return EXIT_OK


def cmd_connections_limits(args: argparse.Namespace, settings: Settings) -> int:
    from worker.resilience.connection_limits import apply_limits

    try:
        values = check_limits(args.rate, args.burst, args.max_concurrency)
    except InvalidInput as exc:
        raise UsageError(str(exc)) from None
    store = store_for(settings)
    store.set_limits(
        args.id,
        rate_per_second=values.rate_per_second,
        rate_burst=values.rate_burst,
        max_concurrency=values.max_concurrency,
    )
    connection = store.get_connection(args.id)
    apply_limits(Runtime(settings=settings).limits, [connection])
    print(
        f"limits of {args.id}: rate {connection.rate_per_second or 'default'}/s, "
        f"burst {connection.rate_burst or 'default'}, "
        f"concurrency {connection.max_concurrency or 'default'}"
    )
    return EXIT_OK
