"""A task's two round trips to Redis: the pipeline that starts it and the one that ends
its slice (docs/design.md, "Around each request").

The start counts this delivery of the message, takes the pair's lease and a
concurrency slot and reads the preflight cache; the end records the slice's
last carried success, frees the slot (and the lease, when the run is done)
and reads the connection's slot-waiting mark, waking a waiter when it is set
(``slot_wait``).
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.coordination import redis_keys
from worker.coordination.scripts import ScriptCall, coordination, in_one_round_trip, text
from worker.logs import log
from worker.resilience.guard import Guard
from worker.runtime import Runtime
from worker.sync.slot_wait import wake_one_waiter


@dataclass(frozen=True)
class TaskStart:
    """What a task learns from Redis before it starts: one round trip (``begin_task``)."""

    deliveries: int  # how many times the broker handed out this message (this one included)
    holder: str  # who holds the pair's lease now: this task when it equals its holder
    slot: bool  # this task took one of the connection's concurrency slots
    preflight_cached: bool  # the connection's status answer is cached (first task only)


def begin_task(
    rt: Runtime,
    connection_id: str,
    entity: str,
    me: str,
    *,
    first_task: bool,
    delivery: tuple[str, int],
) -> TaskStart:
    """Count this delivery, take the pair's lease and a concurrency slot and read the
    preflight cache, pipelined.

    Four round trips sent as one (docs/design.md, "Around each request"). The
    caller gives back what a task does not keep: the slot when it does not
    get the lease, the lease and slot when the delivery is one too many.
    """
    task_id, retries = delivery
    calls = [
        rt.deliveries.count_call(task_id, retries),
        rt.leases.acquire_call(connection_id, entity, me),
        rt.limits.slot_call("acquire", connection_id, me, ttl_s=rt.settings.lease_ttl),
    ]
    reads = [redis_keys.preflight(connection_id)] if first_task else []
    with coordination(f"start {connection_id}/{entity}"):
        (deliveries, holder, slot), cached = in_one_round_trip(rt.redis, calls, reads=reads)
    return TaskStart(
        deliveries=int(deliveries),
        holder=text(holder),
        slot=int(slot) == 1,
        preflight_cached=bool(cached) and int(cached[0]) > 0,
    )


def slice_ending(rt: Runtime, guard: Guard, connection_id: str, me: str) -> list[ScriptCall]:
    """The calls that end a slice: record its last success, if carried, and free the slot."""
    calls = [rt.limits.slot_call("release", connection_id, me, ttl_s=0.0)]
    carried = guard.carried_record()
    if carried is not None:
        calls.insert(0, carried)
    return calls


def send_ending(rt: Runtime, calls: list[ScriptCall], connection_id: str) -> None:
    """Send the calls that end a slice in one round trip (docs/design.md, "Around each
    request"), with a read of the slot-waiting mark; wake a waiter when it is set."""
    with coordination(f"end of slice {connection_id}"):
        _, (waiting,) = in_one_round_trip(
            rt.redis, calls, reads=[redis_keys.slot_waiters(connection_id)]
        )
    if not waiting:
        return
    try:
        wake_one_waiter(rt.publish, store=rt.store, client=rt.redis, connection_id=connection_id)
    except Exception:
        # The waiter's own countdown still resumes it, a moment later.
        log.warning("could not wake a job waiting for a slot of %s", connection_id, exc_info=True)
