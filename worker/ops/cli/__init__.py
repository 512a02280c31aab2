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
import sys
from collections.abc import Sequence

from worker.errors import ConfigError, EntitySyncError, UnknownConnection, UnknownEvent
from worker.operator_input import InvalidInput
from worker.ops.cli.common import (
    ENTITY_CHOICES,
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    Handler,
    UsageError,
    add_sandbox_arguments,
    add_webhook_url_sources,
)
from worker.ops.cli.connections import (
    cmd_connections_add,
    cmd_connections_interval,
    cmd_connections_limits,
    cmd_connections_list,
    cmd_connections_reconcile,
    cmd_connections_remove,
    cmd_connections_set_token,
    cmd_connections_set_webhook,
    cmd_connections_show,
    cmd_schema,
)
from worker.ops.cli.deletions import add_parsers as add_deletion_parsers
from worker.ops.cli.runs import (
    cmd_breaker,
    cmd_events,
    cmd_status,
    cmd_sync,
)
from worker.ops.cli.tools import (
    cmd_dashboard,
    cmd_demo,
    cmd_keygen,
    cmd_receiver,
    cmd_rotate_key,
    cmd_sandbox,
    cmd_sandbox_webhook,
    cmd_upstream_events,
)
from worker.ops.cli.workers import add_parser as add_workers_parser
from worker.settings import get_settings


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
    add.add_argument("--webhook-url", help="where its events go (or one of the two below)")
    add_webhook_url_sources(add)
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
    hook.add_argument(
        "webhook_url",
        metavar="url",
        nargs="?",
        help="where its events go (or --webhook-url-stdin / --webhook-url-file)",
    )
    add_webhook_url_sources(hook)
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

    add_sandbox_arguments(command("sandbox", cmd_sandbox, "serve the simulated unified API"))

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

    add_deletion_parsers(commands, conn_commands)
    command("demo", cmd_demo, "sandbox + worker + real syncs + status table")
    add_workers_parser(commands)
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
