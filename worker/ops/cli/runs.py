"""`entity-sync sync`, `status`, `events` and `breaker`: the work and its state."""

from __future__ import annotations

import argparse
import json
import sys
import time

from worker.events import Event
from worker.ops.cli.common import (
    EXIT_DEFERRED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    UsageError,
    store_for,
)
from worker.ops.status import render_full_reads, render_table, render_upstream, status_rows
from worker.runtime import Runtime
from worker.settings import Settings
from worker.store import RunStatus


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    from worker.client import EntitySyncClient

    store = store_for(settings)
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

    store, rt = store_for(settings), Runtime(settings=settings)
    rows = status_rows(store, rt.breaker, args.id)
    if args.json:
        print(json.dumps([row.as_json() for row in rows], indent=2))
    else:
        print(render_table(rows))
        for below in (render_full_reads(rows), render_upstream(store, args.id)):
            if below:
                print()
                print(below)
    notice = beat_state(rt.redis, settings, store.parked_jobs(args.id)).notice()
    if notice:  # on stderr under --json, which stays parseable
        print(f"warning: {notice}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK


# -- events --------------------------------------------------------------------------


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    store = store_for(settings)
    if args.action == "redeliver":
        from worker.client import EntitySyncClient
        from worker.outbox.notifier import relay
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

    store_for(settings).get_connection(args.id)
    print(breaker_command(Runtime(settings=settings), args))
    return EXIT_OK
