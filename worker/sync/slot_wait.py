"""Waiting for a busy connection's concurrency slot, and being woken when one frees.

A task that finds every slot of its connection taken parks its job (so the
worker serves other connections); the refused acquire itself marked the
connection as having a waiter (``resilience/lua/slots.lua``). The task that
frees a slot reads that mark in the same round trip as the release and, when
it is set, resumes the job that has waited longest at once, instead of
leaving the slot idle until the waiter's own countdown (``SLOT_WAIT_S``,
which stays the fallback). With one slot per connection
(``MAX_CONCURRENCY=1``, the setting that keeps every request out of a
Retry-After window) this is what keeps a connection's entity types reading
back to back (docs/design.md, "Concurrency slots").
"""

from __future__ import annotations

import redis

from worker.coordination import redis_keys
from worker.jobs import Publish
from worker.logs import log
from worker.store import SqlStore
from worker.sync.recovery import resume_parked_job

SLOT_WAIT_S = 2.0  # the waiter's own countdown: the fallback when no release wakes it
SLOT_WAIT_REASON = "waiting for a concurrency slot"


def wake_one_waiter(
    send: Publish, *, store: SqlStore, client: redis.Redis, connection_id: str
) -> bool:
    """Resume now the job parked longest for one of the connection's slots.

    Called by the task that has just freed a slot and seen the waiting mark.
    The park row is the claim (``resume_parked_job``), so a job woken twice,
    or by beat meanwhile, still runs once. With no waiter left the mark goes.
    """
    waiting = [job for job in store.parked_jobs(connection_id) if job.reason == SLOT_WAIT_REASON]
    for job in waiting:
        if resume_parked_job(
            send,
            store=store,
            client=client,
            connection_id=connection_id,
            entity_type=job.entity_type,
            run_id=job.run_id,
            due_at=job.due_at,
        ):
            log.info("woke the job of %s waiting for a free slot", job.entity_type)
            return True
    client.delete(redis_keys.slot_waiters(connection_id))
    return False
