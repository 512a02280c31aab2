"""`entity-sync breaker show|open|close|reset CONNECTION [--entity T]`: operators steer breakers."""

from __future__ import annotations

import argparse

from worker.ops.status import health_of
from worker.resilience.breaker_types import Actor
from worker.resilience.guard import StateChange
from worker.runtime import Runtime
from worker.timeutil import unix_to_instant


def breaker_command(rt: Runtime, args: argparse.Namespace) -> str:
    """Carry out one breaker command; returns what to print."""
    breaker, connection_id, entity = rt.breaker, args.id, args.entity
    reason = f"operator: {args.reason}"
    if args.action == "open":
        change = breaker.force_open(connection_id, entity, seconds=args.seconds, reason=reason)
    elif args.action == "close":
        change = breaker.force_close(connection_id, entity, reason=reason)
    elif args.action == "reset":
        removed = breaker.reset(connection_id, entity)
        return f"reset {connection_id}{'/' + entity if entity else ''}: {removed} key(s) removed"
    else:
        return _show(rt, connection_id)
    if change.transitioned:
        rt.transitions(
            StateChange(
                connection_id,
                entity,
                change.from_state,
                change.state,
                reason,
                change.until,
                actor=Actor.OPERATOR,
            )
        )
    until = unix_to_instant(change.until)
    return (
        f"{connection_id}{'/' + entity if entity else ''}: {change.from_state} -> {change.state}"
        + (f" until {until}" if until else "")
    )


def _show(rt: Runtime, connection_id: str) -> str:
    view = rt.breaker.show(connection_id)
    health = health_of(view)
    lines = [
        f"connection {connection_id}: {view.connection.state.value}"
        + (f" until {unix_to_instant(view.connection.until)}" if view.connection.until else "")
        + (f" ({view.connection.reason})" if view.connection.reason else ""),
    ]
    if view.paused_until and view.paused_until > view.now:
        lines.append(f"  paused until {unix_to_instant(view.paused_until)}: {view.pause_reason}")
    connection = rt.store.get_connection(connection_id)
    for entity in connection.entity_types:
        pair = health(entity)
        detail = f" until {pair.until}" if pair.until else ""
        detail += f" ({pair.reason})" if pair.reason else ""
        lines.append(
            f"  {entity:<16} {pair.state}{detail}; {pair.recent_failures} recent failure(s), "
            f"{pair.consecutive_failures} in a row"
        )
    return "\n".join(lines)
