"""Which connections are due for a scheduled sync, slot by slot.

Time is cut into slots of each connection's interval, shifted by a per-
connection offset (a hash of its id) so that a thousand connections with one
interval do not all fire in the same second. A slot is enqueued at most once:
claiming it is one conditional UPDATE in the store, so two schedulers, or one
restarted, cannot send it twice. Slots already claimed are skipped from one
read of every connection's last slot, so a tick writes only for the
connections whose slot turned (a few per tick), not for every connection.
A connection whose previous run still goes when its next slot comes skips
that slot instead of piling runs up.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from worker.errors import StoreError
from worker.logs import connection_log
from worker.store import Connection, SqlStore
from worker.timeutil import canonical

# A run that began this long ago and never finished is presumed lost.
STALE_RUN = timedelta(hours=2)


@dataclass(frozen=True)
class SlotDecision:
    """What the scheduler did with one connection's current slot."""

    connection_id: str
    slot: int
    outcome: str  # "enqueued" or "skipped: <why>"


def offset_s(connection_id: str, interval_s: int) -> int:
    """A stable spread in [0, interval) for this connection (the jitter)."""
    return zlib.crc32(connection_id.encode()) % max(1, interval_s)


def current_slot(connection_id: str, interval_s: int, now: float) -> int:
    """The index of the slot ``now`` falls in, for this connection."""
    return int((now - offset_s(connection_id, interval_s)) // interval_s)


def schedule_due(
    store: SqlStore,
    connections: Iterable[Connection],
    *,
    default_interval_s: int,
    now: float,
    enqueue: Callable[[Connection], None],
) -> list[SlotDecision]:
    """Claim and enqueue every connection's current slot that nobody claimed yet."""
    busy = store.busy_connections(
        started_after=canonical(datetime.fromtimestamp(now, UTC) - STALE_RUN)
    )
    claimed = store.last_slots()
    decisions = []
    for connection in connections:
        interval = int(connection.sync_interval(default_interval_s))
        slot = current_slot(connection.id, interval, now)
        last = claimed.get(connection.id)
        if last is not None and last >= slot:
            continue  # claimed already: the conditional UPDATE would refuse it
        outcome = "skipped: previous run still going" if connection.id in busy else "enqueued"
        try:
            if not store.claim_slot(connection.id, slot, outcome):
                continue
        except StoreError as exc:
            # One connection's row must never cost the connections after it
            # their slot: log it, and go on with the next.
            connection_log.error(
                "schedule: slot %d not claimed: %s",
                slot,
                exc,
                extra={"connection_id": connection.id},
            )
            continue
        if outcome == "enqueued":
            enqueue(connection)
        decisions.append(SlotDecision(connection.id, slot, outcome))
    return decisions
