"""`entity-sync`: the command line for operators.

Exit status: 0 done, 1 the work failed (a run failed, a check failed),
2 bad input (unknown connection, wrong argument, wrong setting), 3 timed out,
4 deferred (`sync --wait`: held back by a breaker, pause or missing beat; the
work goes on in the background).
Tokens are read from stdin or a file, never from the command line, where
`ps` and shell history would show them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from worker.entities import ALL_ENTITY_TYPES
from worker.errors import ConfigError, EntitySyncError, UnknownConnection, UnknownEvent
from worker.jobs import is_valid_connection_id
from worker.operator_input import (
    InvalidInput,
    check_http_url,
    check_interval,
    check_limits,
    clean_secret,
    decode_secret_bytes,
)
from worker.ops.status import render_table, render_upstream, status_rows
from worker.runtime import Runtime
from worker.secrets import SecretBox, generate_key
from worker.settings import Settings, get_settings
from worker.store import Connection, Event, RunStatus, SqlStore, open_store

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_TIMEOUT, EXIT_DEFERRED = 0, 1, 2, 3, 4
ENTITY_CHOICES = [t.value for t in ALL_ENTITY_TYPES]


class UsageError(EntitySyncError):
    """The command line itself is wrong."""


def _store(settings: Settings) -> SqlStore:
    return open_store(settings.store_url)


def _read_secret(args: argparse.Namespace, what: str = "token") -> str:
    """A token or secret from ``--token-file`` or stdin, as UTF-8 (a BOM allowed), checked.

    Bytes, not the locale's text: a file saved by a Windows editor starts with
    a BOM and must read the same as any other. Messages never show the value.
    """
    if args.token_file:
        try:
            raw = Path(args.token_file).read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise UsageError(f"--token-file: cannot read {args.token_file}: {reason}") from None
    else:
        if sys.stdin.isatty():
            prompt = f"{what} (input hidden is not supported; paste and press Enter):"
            print(prompt, file=sys.stderr)
        raw = sys.stdin.buffer.readline()
    return clean_secret(decode_secret_bytes(raw, what=what), what=what)


def _read_token(args: argparse.Namespace) -> str:
    return _read_secret(args, "token")


def _upstream_url(url: str | None) -> str | None:
    """A per-connection API URL under the rule of ENTITY_SYNC_UPSTREAM_URL; warns on http."""
    if url is None:
        return None
    try:
        checked = check_http_url(url, what="--upstream-url")
    except InvalidInput as exc:
        raise UsageError(str(exc)) from None
    if checked.lower().startswith("http://"):
        print(
            "warning: --upstream-url is plain http: the token travels unencrypted "
            "(use https outside a trusted network)",
            file=sys.stderr,
        )
    return checked


# -- connections ------------------------------------------------------------------


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
    webhook_url = _webhook_url(args.webhook_url, settings)
    upstream_url = _upstream_url(args.upstream_url)
    box = SecretBox.from_settings(settings)
    token = _read_token(args) if (args.token_file or args.token_stdin) else None
    _store(settings).add_connection(
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
    return EXIT_OK


def _connection_json(connection: Connection) -> dict[str, object]:
    return {
        "id": connection.id,
        "name": connection.name,
        "entity_types": list(connection.entity_types),
        "upstream_url": connection.upstream_url,
        "webhook_url": connection.webhook_url,
        "has_token": bool(connection.token_ciphertext),
        "token_version": connection.token_version,
        "created_at": connection.created_at,
        "updated_at": connection.updated_at,
    }


def cmd_connections_list(args: argparse.Namespace, settings: Settings) -> int:
    connections = _store(settings).list_connections()
    if args.json:
        print(json.dumps([_connection_json(c) for c in connections], indent=2))
        return EXIT_OK
    for c in connections:
        token = "token set" if c.token_ciphertext else "NO TOKEN"
        print(f"{c.id:<24} {c.name:<28} {len(c.entity_types)} entity types  {token}")
    return EXIT_OK


def cmd_connections_show(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    shown = _connection_json(store.get_connection(args.id))
    shown["webhook_events"] = store.webhook_events(args.id)
    shown["reconcile_interval_s"] = store.reconcile_intervals().get(args.id)
    # The unified API's id of it, learned at a preflight: its webhooks name it so.
    shown["upstream_connection_id"] = store.upstream_connection_id(args.id)
    print(json.dumps(shown, indent=2))
    return EXIT_OK


def cmd_connections_remove(args: argparse.Namespace, settings: Settings) -> int:
    from worker.ops.removal import remove_connection

    deleted = remove_connection(_store(settings), Runtime(settings=settings).redis, args.id)
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
    store = _store(settings)
    store.get_connection(args.id)
    version = store.set_token(args.id, box.encrypt(_read_token(args)))
    print(f"token of {args.id} replaced (version {version})")
    try:
        if resume_connection(Runtime(settings=settings), args.id, "new token"):
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

    store = _store(settings)
    connection = store.get_connection(args.id)
    url = _webhook_url(args.url, settings)
    window = settings.webhook_secret_rotation_seconds
    if args.rotation_seconds is not None:
        if not 0 <= args.rotation_seconds <= 30 * 86_400:
            raise UsageError("--rotation-seconds must be 0..2592000 (30 days)")
        window = args.rotation_seconds
    secret = until = None
    note = ""
    if args.secret_stdin:
        box = SecretBox.from_settings(settings)
        plaintext = _read_secret(args, "webhook secret")
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
    print(f"webhook of {args.id}: {url}{note}")
    chosen = store.webhook_events(args.id)
    print(
        "events: connection and entity state changes"
        + (f", {', '.join(chosen)}" if chosen else " (no opt-in events)")
    )
    return EXIT_OK


def _opt_in_events(value: str) -> list[str]:
    """``--events``: a comma-separated list of opt-in event types, or ``none``."""
    from worker.outbox.events import OPT_IN_EVENTS, EventType

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

    store = _store(settings)
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
    store = _store(settings)
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
    store = _store(settings)
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


# -- sync and status ---------------------------------------------------------------


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    from worker.client import EntitySyncClient

    store = _store(settings)
    connection = store.get_connection(args.id)
    entity_types = args.entity or list(connection.entity_types)
    missing = sorted(set(entity_types) - set(connection.entity_types))
    if missing:
        raise UsageError(f"connection {args.id} does not sync {', '.join(missing)}")
    client = EntitySyncClient(settings.effective_broker_url)
    request_id = client.sync_connection(
        connection.id, entity_types=args.entity or None, full=args.full
    )
    print(f"sync of {connection.id} enqueued (request {request_id})")
    if not args.wait:
        return EXIT_OK
    from worker.ops.waiting import Watcher

    outcome = Watcher(
        Runtime(settings=settings), request_id, connection.id, entity_types, timeout_s=args.timeout
    ).wait()
    if outcome.deferred:
        now = time.time()
        held = "; ".join(f"{p.entity_type}: {p.why(now)}" for p in outcome.deferred)
        if outcome.timed_out:
            print(f"error: not finished after {args.timeout:g}s: {held}", file=sys.stderr)
            return EXIT_TIMEOUT
        print(f"deferred (the work goes on in the background): {held}")
        return EXIT_DEFERRED
    runs = outcome.runs
    failed = [r for r in runs if r.status != RunStatus.SUCCEEDED]
    for run in runs:
        line = f"  {run.entity_type or '-':<16} {run.status:<10} {run.records:>8} records"
        print(line + (f"  {run.error_message}" if run.error_message else ""))
    return EXIT_FAILED if failed else EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from worker.celeryapp.beat import beat_state

    store, rt = _store(settings), Runtime(settings=settings)
    rows = status_rows(store, rt.breaker, args.id)
    if args.json:
        print(json.dumps([row.as_json() for row in rows], indent=2))
    else:
        print(render_table(rows))
        upstream = render_upstream(store, args.id)
        if upstream:
            print()
            print(upstream)
    notice = beat_state(rt.redis, settings, store.parked_jobs(args.id)).notice()
    if notice:  # on stderr under --json, which stays parseable
        print(f"warning: {notice}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK


# -- events --------------------------------------------------------------------------


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    if args.action == "redeliver":
        from worker.client import EntitySyncClient
        from worker.outbox.relay import relay
        from worker.timeutil import utc_now

        if not args.event_id:
            raise UsageError("redeliver needs an EVENT_ID")
        event = store.redeliver(args.event_id, now=utc_now())
        # The client's send: redelivering must not build the worker's Celery app.
        relay(EntitySyncClient(settings.effective_broker_url).send, event.connection_id)
        print(f"event {event.id} queued for delivery again (same id)")
        return EXIT_OK
    status = "pending" if args.pending or args.failed else "dead" if args.dead else None
    events = store.events(
        connection_id=args.connection, status=status, failed_only=args.failed, limit=args.limit
    )
    if args.json:
        print(json.dumps([_event_json(e) for e in events], indent=2))
        return EXIT_OK
    for e in events:
        print(
            f"{e.created_at[:19]}  {e.id}  {e.type:<38} {e.connection_id:<20} "
            f"{e.entity_type or '-':<16} {e.status:<9} attempts={e.attempts}"
            + (f"  last error: {e.last_error}" if e.last_error else "")
        )
    return EXIT_OK


def _event_json(event: Event) -> dict[str, object]:
    return {
        "id": event.id,
        "type": event.type,
        "connection_id": event.connection_id,
        "entity_type": event.entity_type,
        "created_at": event.created_at,
        "status": event.status,
        "attempts": event.attempts,
        "next_attempt_at": event.next_attempt_at,
        "last_error": event.last_error,
        "delivered_at": event.delivered_at,
        "body": json.loads(event.body_json),
    }


# -- breakers ------------------------------------------------------------------------


def cmd_breaker(args: argparse.Namespace, settings: Settings) -> int:
    from worker.ops.breaker_commands import breaker_command

    _store(settings).get_connection(args.id)
    print(breaker_command(Runtime(settings=settings), args))
    return EXIT_OK


# -- keys, sandbox, demo -------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    from worker.outbox.webhooks import new_secret, standard_form

    if args.standard_form:
        # A secret set before the whsec_ + base64 form: what a Standard Webhooks
        # library needs to verify the deliveries it signs (docs/webhooks.md).
        print(standard_form(_read_secret(args, "webhook secret")))
    elif args.webhook:
        print(new_secret())
    else:
        print(generate_key())
    return EXIT_OK


def cmd_rotate_key(args: argparse.Namespace, settings: Settings) -> int:
    box = SecretBox.from_settings(settings)
    store = _store(settings)
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


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from worker.sandbox import load_config, serve
    from worker.sandbox.webhooks import WebhookTarget

    target = None
    if args.webhook_url:
        if not args.webhook_secret_file:
            raise UsageError("--webhook-url needs --webhook-secret-file")
        secret = decode_secret_bytes(
            Path(args.webhook_secret_file).read_bytes(), what="webhook secret"
        )
        target = WebhookTarget(url=args.webhook_url, secret=secret)
    serve(args.host, args.port, load_config(args.config or args.preset), webhooks=target)
    return EXIT_OK


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
    from worker.inbound.receiver import serve

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
        store=_store(settings),
        secrets=secrets,
        publish=publish,
        max_bytes=settings.upstream_webhook_max_bytes,
    )
    return EXIT_OK


def cmd_upstream_events(args: argparse.Namespace, settings: Settings) -> int:
    from worker.inbound.actions import event_json

    status = "unmapped" if args.unmapped else args.status
    events = _store(settings).upstream_events(status=status, limit=args.limit)
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
    )
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from worker.ops.demo import run_demo

    return run_demo(settings)


# -- parser --------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entity-sync", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, handler: Handler, help_text: str, parent: object = commands
    ) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help_text, description=help_text)  # type: ignore[attr-defined]
        sub.set_defaults(handler=handler)
        return sub  # type: ignore[no-any-return]

    conns = commands.add_parser("connections", help="register and manage connections")
    conn_commands = conns.add_subparsers(dest="action", required=True)
    add = command("add", cmd_connections_add, "register a connection", conn_commands)
    add.add_argument("id")
    add.add_argument("--name")
    add.add_argument("--upstream-url", help="default: ENTITY_SYNC_UPSTREAM_URL")
    add.add_argument("--entity", action="append", choices=ENTITY_CHOICES, help="repeatable")
    add.add_argument("--webhook-url")
    add.add_argument("--token-file", help="read the token from this file")
    add.add_argument("--token-stdin", action="store_true", help="read the token from stdin")
    listing = command("list", cmd_connections_list, "list connections", conn_commands)
    listing.add_argument("--json", action="store_true")
    command("show", cmd_connections_show, "show one connection", conn_commands).add_argument("id")
    command(
        "remove", cmd_connections_remove, "remove a connection and its data", conn_commands
    ).add_argument("id")
    set_token = command(
        "set-token", cmd_connections_set_token, "replace a token (stdin)", conn_commands
    )
    set_token.add_argument("id")
    set_token.add_argument("--token-file")
    hook = command(
        "set-webhook", cmd_connections_set_webhook, "where events are delivered", conn_commands
    )
    hook.add_argument("id")
    hook.add_argument("url")
    hook.add_argument(
        "--secret-stdin", action="store_true", help="read this connection's signing secret"
    )
    hook.add_argument(
        "--rotation-seconds",
        type=int,
        help="how long the replaced secret still signs next to the new one "
        "(default: ENTITY_SYNC_WEBHOOK_SECRET_ROTATION_SECONDS; 0: stop at once)",
    )
    hook.add_argument(
        "--events",
        help="opt-in event types to deliver as well, comma-separated (sync.completed, "
        "sync.failed), or 'none'; connection and entity state events are always delivered "
        "(omit: unchanged)",
    )
    hook.set_defaults(token_file=None)
    reconcile = command(
        "reconcile",
        cmd_connections_reconcile,
        "how often it is read in full to find records the source deleted",
        conn_commands,
    )
    reconcile.add_argument("id")
    when = reconcile.add_mutually_exclusive_group()
    when.add_argument("--every", type=int, metavar="SECONDS", help="1 s to a year")
    when.add_argument(
        "--default", action="store_true", help="ENTITY_SYNC_RECONCILE_INTERVAL_SECONDS (a week)"
    )
    interval = command(
        "interval", cmd_connections_interval, "how often it syncs on schedule", conn_commands
    )
    interval.add_argument("id")
    interval.add_argument("seconds", type=int, nargs="?", help="omit for the default")
    limits = command(
        "limits", cmd_connections_limits, "per-connection rate and concurrency", conn_commands
    )
    limits.add_argument("id")
    limits.add_argument("--rate", type=float, help="requests per second (omit: default)")
    limits.add_argument("--burst", type=int, help="requests allowed at once (omit: default)")
    limits.add_argument("--max-concurrency", type=int, help="tasks at once (omit: default)")

    breaker = command("breaker", cmd_breaker, "show or steer a connection's breakers")
    breaker.add_argument("action", choices=["show", "open", "close", "reset"])
    breaker.add_argument("id")
    breaker.add_argument("--entity", choices=ENTITY_CHOICES, help="one entity type's breaker")
    breaker.add_argument("--seconds", type=float, default=300.0, help="how long `open` holds")
    breaker.add_argument("--reason", default="operator")

    sync = command("sync", cmd_sync, "enqueue a sync of a connection")
    sync.add_argument("id")
    sync.add_argument("--entity", action="append", choices=ENTITY_CHOICES, help="repeatable")
    sync.add_argument("--full", action="store_true", help="resync from scratch")
    sync.add_argument("--wait", action="store_true", help="wait for the runs to finish")
    sync.add_argument("--timeout", type=float, default=600.0, help="seconds to --wait")

    status = command("status", cmd_status, "per connection and entity type: state of the copy")
    status.add_argument("id", nargs="?")
    status.add_argument("--json", action="store_true")

    events = command("events", cmd_events, "the outbox: events and their delivery")
    events.add_argument("action", nargs="?", choices=["list", "redeliver"], default="list")
    events.add_argument("event_id", nargs="?")
    events.add_argument("--connection")
    which = events.add_mutually_exclusive_group()
    which.add_argument("--pending", action="store_true", help="not delivered yet")
    which.add_argument("--failed", action="store_true", help="pending after failed attempts")
    which.add_argument("--dead", action="store_true", help="given up on")
    events.add_argument("--limit", type=int, default=100)
    events.add_argument("--json", action="store_true")

    command("schema", cmd_schema, "print the JSON Schemas of the public task payloads")
    keygen = command("keygen", cmd_keygen, "print a new ENTITY_SYNC_SECRET_KEY")
    kind = keygen.add_mutually_exclusive_group()
    kind.add_argument(
        "--webhook", action="store_true", help="a webhook signing secret (whsec_ + base64)"
    )
    kind.add_argument(
        "--standard-form",
        action="store_true",
        help="read a webhook secret on stdin and print the whsec_ form a Standard Webhooks "
        "library verifies its signatures with",
    )
    keygen.set_defaults(token_file=None)
    command("rotate-key", cmd_rotate_key, "re-encrypt stored secrets with the newest key")

    sandbox = command("sandbox", cmd_sandbox, "serve the simulated unified API")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8900)
    source = sandbox.add_mutually_exclusive_group()
    source.add_argument("--config", help="a sandbox config file (worker/sandbox/README.md)")
    source.add_argument("--preset", default="demo", help="a named preset (default: demo)")
    sandbox.add_argument("--webhook-url", help="where the sandbox sends the unified API's webhooks")
    sandbox.add_argument("--webhook-secret-file", help="the secret it signs them with")

    emit = command(
        "sandbox-webhook", cmd_sandbox_webhook, "make a running sandbox send one webhook now"
    )
    emit.add_argument("token", help="the sandbox connection's token")
    emit.add_argument(
        "type",
        help="connection.reauthorization_required, connection.status_changed, "
        "sync.completed, sync.failed or connection.error",
    )
    emit.add_argument("--data", help='the event\'s data as JSON, e.g. \'{"status": "offline"}\'')
    emit.add_argument("--id", help="the event id (default: a new one)")
    emit.add_argument("--created-at", help="the event's created_at (default: now)")
    emit.add_argument("--sandbox-url", default="http://127.0.0.1:8900")

    receiver = command(
        "receiver", cmd_receiver, "receive the unified API's webhooks (POST /upstream/webhooks)"
    )
    receiver.add_argument("--host", help="default: ENTITY_SYNC_RECEIVER_HOST (127.0.0.1)")
    receiver.add_argument(
        "--port", type=int, help="default: ENTITY_SYNC_RECEIVER_PORT (8902); 0 picks a free one"
    )
    upstream_events = command(
        "upstream-events", cmd_upstream_events, "webhooks received from the unified API"
    )
    upstream_events.add_argument(
        "--status", choices=["received", "applied", "ignored", "unmapped", "stale"]
    )
    upstream_events.add_argument(
        "--unmapped", action="store_true", help="only events for unknown connection ids"
    )
    upstream_events.add_argument("--limit", type=int, default=100)
    upstream_events.add_argument("--json", action="store_true")

    dashboard = command("dashboard", cmd_dashboard, "serve the read-only health dashboard")
    dashboard.add_argument("--host", help="default: ENTITY_SYNC_DASHBOARD_HOST (127.0.0.1)")
    dashboard.add_argument("--port", type=int, help="default: ENTITY_SYNC_DASHBOARD_PORT (8901)")
    dashboard.add_argument(
        "--loopback-names-only",
        action="store_true",
        help="answer only requests whose Host is a loopback name, whatever --host "
        "(a container whose port is published on 127.0.0.1 only)",
    )

    command("demo", cmd_demo, "sandbox + worker + real syncs + status table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        return int(args.handler(args, settings))
    except (ConfigError, UnknownConnection, UnknownEvent, UsageError, InvalidInput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except EntitySyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
