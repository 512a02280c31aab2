"""`entity-sync deletions ...` and `connections deletion-guard`: held deletions.

A complete full read that would delete more of a pair than the guard allows
holds the set instead (``worker/store/held_deletions.py``). An operator lists
the held sets, approves one after checking the source, or discards it.
"""

from __future__ import annotations

import argparse
import json
from typing import TypeAlias

from worker.ops.cli.common import ENTITY_CHOICES, EXIT_FAILED, EXIT_OK, UsageError, store_for
from worker.settings import Settings

SHOWN_KEYS = 20  # a held set can be thousands of keys: the table shows the first few


Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_parsers(commands: Subparsers, conn_commands: Subparsers) -> None:
    """Register `deletions` and `connections deletion-guard`."""
    deletions = commands.add_parser(
        "deletions",
        help="deletions held by the mass-deletion guard: list, approve, discard",
        description="Deletions a complete full read found but held, because they were more "
        "than the guard allows on one read's word.",
    )
    deletions.set_defaults(handler=cmd_deletions)
    deletions.add_argument(
        "action", nargs="?", choices=["list", "approve", "discard"], default="list"
    )
    deletions.add_argument("id", nargs="?", help="the connection (required to approve or discard)")
    deletions.add_argument("--entity", choices=ENTITY_CHOICES, help="the entity type")
    deletions.add_argument("--json", action="store_true")
    guard = conn_commands.add_parser(
        "deletion-guard",
        help="how many deletions one complete read may apply before they are held",
        description="Show or set the connection's own mass-deletion guard.",
    )
    guard.set_defaults(handler=cmd_connections_deletion_guard)
    guard.add_argument("id")
    guard.add_argument("--percent", type=float, help="hold past this share of live records")
    guard.add_argument("--min-records", type=int, help="... and past this many records")
    guard.add_argument("--default", action="store_true", help="back to the settings' guard")


def cmd_deletions(args: argparse.Namespace, settings: Settings) -> int:
    store = store_for(settings)
    if args.action == "list":
        if args.id:
            store.get_connection(args.id)
        held = [
            h
            for h in store.held_deletions(args.id)
            if args.entity is None or h.entity_type == args.entity
        ]
        if args.json:
            print(json.dumps([h.__dict__ for h in held], default=list, indent=2))
        elif not held:
            print("no deletions held")
        for h in held if not args.json else ():
            keys = ", ".join(h.keys[:SHOWN_KEYS]) + (" ..." if len(h.keys) > SHOWN_KEYS else "")
            print(f"{h.connection_id} {h.entity_type}: {len(h.keys)} held since {h.held_since}")
            print(f"  {keys}")
        return EXIT_OK
    if not args.id or not args.entity:
        raise UsageError(f"`deletions {args.action}` needs a connection id and --entity")
    if args.action == "approve":
        marked, came_back = store.approve_held_deletions(args.id, args.entity)
        print(
            f"{marked} held deletions of {args.id} {args.entity} applied"
            + (f"; {came_back} keys were read again since and stay live" if came_back else "")
        )
        return EXIT_OK if marked or came_back else EXIT_FAILED
    dropped = store.discard_held_deletions(args.id, args.entity)
    print(f"{dropped} held deletions of {args.id} {args.entity} discarded: the records stay live")
    return EXIT_OK if dropped else EXIT_FAILED


def cmd_connections_deletion_guard(args: argparse.Namespace, settings: Settings) -> int:
    store = store_for(settings)
    connection = store.get_connection(args.id)
    if args.default and (args.percent is not None or args.min_records is not None):
        raise UsageError("--default sets both parts back: give it alone")
    if args.percent is not None and not 0 <= args.percent <= 100:
        raise UsageError(f"--percent must be between 0 and 100, not {args.percent:g}")
    if args.min_records is not None and args.min_records < 0:
        raise UsageError(f"--min-records must be 0 or more, not {args.min_records}")
    own = store.deletion_guard(connection.id)
    if args.default:
        own = (None, None)
    elif args.percent is not None or args.min_records is not None:
        own = (
            args.percent if args.percent is not None else own[0],
            args.min_records if args.min_records is not None else own[1],
        )
    store.set_deletion_guard(connection.id, max_percent=own[0], min_records=own[1])
    percent = own[0] if own[0] is not None else settings.deletion_guard_percent
    minimum = own[1] if own[1] is not None else settings.deletion_guard_min_records
    print(
        f"{connection.id}: a complete read holds its deletions past {percent:g}% of the live "
        f"records and {minimum} records (or all of them)"
        + ("" if own != (None, None) else " (the settings' default)")
    )
    return EXIT_OK
