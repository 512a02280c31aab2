"""Periodic recovery: resume parked jobs and stalled runs, re-probe halted connections
and blocked types.

Plain functions the housekeeping tasks call; each is idempotent, so two
schedulers running them at once cost some work and change nothing.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis

from worker.coordination import redis_keys
from worker.coordination.lease import Leases, Lock
from worker.errors import EntitySyncError
from worker.events import PROBLEM_EVENTS, EventReason, EventType, build_event
from worker.jobs import (
    SYNC_CONNECTION,
    SYNC_ENTITY,
    SYNC_QUEUE,
    Publish,
    SyncEntityJob,
    sync_queue,
)
from worker.logs import connection_log, log
from worker.operator_input import clean_secret
from worker.outbox.notifier import relay
from worker.resilience.breaker import Breaker, State
from worker.resilience.breaker_types import Actor
from worker.resilience.classify import error_for_sync_status
from worker.resilience.connection_limits import apply_limits
from worker.resilience.guard import StateChange
from worker.runtime import Runtime
from worker.store import Connection, Run, RunStatus, SqlStore
from worker.sync.preflight import forget_preflight, learn_upstream_id
from worker.timeutil import canonical, parse_instant

Backlog = Callable[[str], int]  # messages waiting in a broker queue


def _queue_of(*, full: bool) -> str:
    """The queue recovery sends a job back to, by the fan-out's rule (``jobs.sync_queue``).

    Sending again is recovery work, whatever started the run: it waits in the
    ordinary queue (a full read in backfill), not ahead of what a person asked
    for just now. A run that recorded its queue goes back to that one.
    """
    return sync_queue(trigger="recovery", full=full, first_sync=False)


CLAIM_S = 60.0  # a claimed parked job comes due again if its task never starts
HALT_PROBE_EVERY_S = 300.0  # "a slow status probe" of a halted connection
MAX_RECOVERIES = 5  # a run whose task keeps vanishing is failed, not re-sent for ever


def resume_parked(store: SqlStore, send: Publish, *, limit: int = 500) -> int:
    """Send every parked job that is due; returns how many were sent."""
    now = datetime.now(UTC)
    jobs = store.claim_due_jobs(
        now=canonical(now), claim_until=canonical(now + timedelta(seconds=CLAIM_S)), limit=limit
    )
    for job in jobs:
        payload = json.loads(job.payload_json)
        send(SYNC_ENTITY, payload, _queue_of(full=bool(payload.get("full"))))
    return len(jobs)


# A parked job due within this many seconds is resumed by the worker itself, with a
# countdown: far inside the broker's visibility timeout (1 h), so the held message
# is never redelivered early, and about the longest countdown a retry already uses
# (worker/sync/runner.py MAX_COUNTDOWN_S). Later ones wait for beat's resume_parked.
SELF_RESUME_MAX_S = 60.0
# At most this many such countdowns outstanding at once, across every worker: each
# sits unacknowledged in a worker's memory and counts against its
# worker_eta_task_limit (worker/celeryapp/app.py), which must stay free for retries.
SELF_RESUME_CAP = 50
_SELF_RESUME_GRACE_S = 30.0  # a countdown this overdue died with its worker


def plan_self_resume(
    client: redis.Redis, connection_id: str, entity_type: str, due_at: str
) -> float | None:
    """The countdown for a worker to resume a job it just parked, or None: beat will.

    Registered in Redis so that ``status`` knows which parked jobs resume
    without beat; capped so that countdowns never crowd a worker's memory.
    """
    now = time.time()
    until = parse_instant(due_at).timestamp()
    if until - now > SELF_RESUME_MAX_S:
        return None
    key = redis_keys.SELF_RESUMES
    try:
        pipe = client.pipeline(transaction=False)
        pipe.zremrangebyscore(key, "-inf", now - _SELF_RESUME_GRACE_S)
        pipe.zcard(key)
        _, outstanding = pipe.execute()
        if int(outstanding) >= SELF_RESUME_CAP:
            return None
        pipe = client.pipeline(transaction=False)
        pipe.zadd(key, {_member(connection_id, entity_type, due_at): until})
        pipe.expire(key, int(SELF_RESUME_MAX_S + _SELF_RESUME_GRACE_S) * 2)
        pipe.execute()
    except redis.RedisError as exc:
        # The job is parked already: beat resumes it. Nothing is lost by not hurrying.
        log.warning("cannot plan the resume of a parked job (Redis: %s): beat will", exc)
        return None
    return max(0.0, until - now)


def _member(connection_id: str, entity_type: str, due_at: str) -> str:
    # Neither a connection id nor an entity type holds "/" (worker/jobs.py).
    return f"{connection_id}/{entity_type}/{due_at}"


def self_resuming(client: redis.Redis) -> set[tuple[str, str]]:
    """The (connection, entity type) pairs a worker holds a resume countdown for."""
    since = time.time() - _SELF_RESUME_GRACE_S
    members = client.zrangebyscore(redis_keys.SELF_RESUMES, since, "+inf")
    pairs = (_text(m).split("/", 2) for m in members)
    return {(p[0], p[1]) for p in pairs if len(p) == 3}


def _text(member: object) -> str:
    return member.decode() if isinstance(member, bytes) else str(member)


def resume_parked_job(
    send: Publish,
    *,
    store: SqlStore,
    client: redis.Redis,
    connection_id: str,
    entity_type: str,
    run_id: str,
    due_at: str,
) -> bool:
    """Send one parked job that a worker scheduled itself to resume; False if already gone.

    The park row is the single claim: beat's resume_parked and this race for
    it, and whoever loses sends nothing, so the job runs once.
    """
    claim_until = canonical(datetime.now(UTC) + timedelta(seconds=CLAIM_S))
    job = store.claim_parked_job(
        connection_id, entity_type, run_id=run_id, due_at=due_at, claim_until=claim_until
    )
    if job is not None:
        payload = json.loads(job.payload_json)
        send(SYNC_ENTITY, payload, _queue_of(full=bool(payload.get("full"))))
    with contextlib.suppress(redis.RedisError):  # the entry expires by itself anyway
        client.zrem(redis_keys.SELF_RESUMES, _member(connection_id, entity_type, due_at))
    return job is not None


def resend_stalled_runs(
    send: Publish,
    backlog: Backlog,
    *,
    store: SqlStore,
    leases: Leases,
    stalled_run_seconds: float,
    limit: int = 200,
) -> int:
    """Send again every run whose next task was lost; returns how many were sent.

    A run is stalled when no task of it started, committed a page or holds its
    pair's lease for ``stalled_run_seconds``: its message died with the broker
    (a Redis restarted empty, a worker killed inside kombu's pop-to-unacked
    window). A queued run (written by the fan-out before it sent the message)
    only counts while its queue is empty: in a backlog, the message may simply
    still be waiting its turn. The run resumes from its saved cursor, where its
    last committed page left it, so nothing is skipped.
    """
    now = datetime.now(UTC)
    quiet_since = canonical(now - timedelta(seconds=stalled_run_seconds))
    waiting: dict[str, int] = {}
    sent = 0
    for run in store.stalled_runs(quiet_since=quiet_since, limit=limit):
        if not run.connection_id or not run.entity_type:
            continue
        queue = run.queue or _queue_of(full=run.full)
        if run.status == RunStatus.QUEUED:
            if queue not in waiting:
                waiting[queue] = backlog(queue)
            if waiting[queue]:
                continue
        if leases.holder(run.connection_id, run.entity_type) is not None:
            continue  # a task of this run (or of another) is alive
        if not store.claim_stalled_run(run.id, quiet_since=quiet_since):
            continue  # it moved meanwhile, or another scheduler took it
        if run.recoveries >= MAX_RECOVERIES:
            _give_up(store, run)
            continue
        send(SYNC_ENTITY, _resumed_job(run).model_dump(mode="json"), queue)
        connection_log.warning(
            "%s run %s of %s/%s had no task for %g s (lost by the broker?): sent again "
            "from its saved cursor",
            run.status,
            run.id,
            run.connection_id,
            run.entity_type,
            stalled_run_seconds,
            extra={"connection_id": run.connection_id, "run_id": run.id},
        )
        sent += 1
    return sent


def _resumed_job(run: Run) -> SyncEntityJob:
    return SyncEntityJob.model_validate(
        {
            "connection_id": run.connection_id,
            "entity_type": run.entity_type,
            "run_id": run.id,
            "request_id": run.request_id,
            "full": run.full,
            "trigger": "recovery",
        }
    )


def _give_up(store: SqlStore, run: Run) -> None:
    reason = f"its task was lost {run.recoveries} times in a row: given up (the next sync resumes)"
    store.finish_run(run.id, RunStatus.FAILED, error_kind="lost", error_message=reason)
    connection_log.error(
        "run %s of %s/%s failed: %s",
        run.id,
        run.connection_id,
        run.entity_type,
        reason,
        extra={"connection_id": run.connection_id, "run_id": run.id},
    )


def resume_connection(
    connection_id: str,
    reason: str,
    *,
    breaker: Breaker,
    client: redis.Redis,
    transitions: Callable[[StateChange], object],
    actor: Actor = Actor.WORKER,
) -> bool:
    """Clear a halt (new token, healthy status); True when it was halted."""
    change = breaker.resume(connection_id, reason)
    forget_preflight(client, connection_id)
    if change.transitioned:
        transitions(
            StateChange(
                connection_id, None, change.from_state, change.state, reason, None, actor=actor
            )
        )
    return change.transitioned


def probe(rt: Runtime, send: Publish) -> dict[str, int]:
    """Re-probe halted connections (status endpoint) and due blocked entity types.

    It takes the whole runtime on purpose, as part of the edge: a halted
    connection's probe reads the store, the breaker, the limits, Redis, the
    secrets, the upstream client and the settings, and resumes through the
    transition recorder, which is nearly every part a ``Runtime`` holds.
    """
    counts = {"halted_probed": 0, "recovered": 0, "blocked_probed": 0, "unavailable_events": 0}
    connections = rt.store.list_connections()
    apply_limits(rt.limits, connections)
    for connection in connections:
        try:
            view = rt.breaker.show(connection.id)
        except EntitySyncError as exc:
            log.warning("probe: cannot read breaker of %s: %s", connection.id, exc)
            continue
        if view.connection.state in (State.OPEN, State.HALF_OPEN):
            counts["unavailable_events"] += _unavailable_event(
                rt.store,
                connection.id,
                after_s=rt.settings.unavailable_after_seconds,
                announce=lambda connection_id: relay(rt.publish, connection_id),
            )
        if view.connection.state is State.HALTED:
            if _probe_halted(rt, connection):
                counts["recovered"] += 1
                send(
                    SYNC_CONNECTION,
                    {"connection_id": connection.id, "trigger": "recovery"},
                    SYNC_QUEUE,
                )
            counts["halted_probed"] += 1
            continue
        for level in view.entity_types:
            if level.state is State.BLOCKED and (level.until or 0) <= view.now:
                send(
                    SYNC_ENTITY,
                    {
                        "connection_id": connection.id,
                        "entity_type": level.level,
                        "trigger": "probe",
                    },
                    SYNC_QUEUE,
                )
                counts["blocked_probed"] += 1
    return counts


def _probe_halted(rt: Runtime, connection: Connection) -> bool:
    """Ask the status endpoint of a halted connection, at most every few minutes.

    Part of ``probe``'s edge: it reads Redis, the secrets, the upstream client,
    the settings and the store, and resumes through the breaker and transitions.
    """
    resting = Lock(rt.redis, ttl_s=HALT_PROBE_EVERY_S).claim(redis_keys.halt_probe(connection.id))
    if not resting or not connection.token_ciphertext:
        return False
    # A halted connection admits nothing, so this one call bypasses the guard
    # on purpose: it is the single slow probe the halt allows.
    try:
        # A stored token need not have passed the CLI's checks: a BOM is dropped
        # here, a character no header carries is an InvalidInput (never echoed).
        token = clean_secret(rt.secrets.decrypt(connection.token_ciphertext), what="token")
        base_url = connection.upstream_url or rt.settings.upstream_url
        status = rt.upstream.status(base_url, token)
        learn_upstream_id(rt.store, connection.id, status.id, base_url=base_url)
    except EntitySyncError as exc:
        connection_log.info(
            "halted connection still failing: %s", exc, extra={"connection_id": connection.id}
        )
        return False
    if error_for_sync_status(status.sync_status) is not None:
        return False
    return resume_connection(
        connection.id,
        f"status probe: {status.sync_status}",
        breaker=rt.breaker,
        client=rt.redis,
        transitions=lambda change: rt.transitions(change),  # built only when needed
    )


def _unavailable_event(
    store: SqlStore, connection_id: str, *, after_s: float, announce: Callable[[str], object]
) -> int:
    """Fire connection.unavailable once the breaker has stayed open long enough.

    ``announce`` relays the connection's new event (called only when one was added).
    """
    since = store.unhealthy_since(connection_id)
    if since is None:
        return 0
    age = (datetime.now(UTC) - parse_instant(since)).total_seconds()
    if age < after_s:
        return 0
    if store.last_event_type(connection_id, None) in {e.value for e in PROBLEM_EVENTS}:
        return 0
    event = build_event(
        EventType.UNAVAILABLE,
        connection_id=connection_id,
        entity_type=None,
        reason=EventReason(kind="unavailable", message=f"breaker open since {since}"),
    )
    if not store.add_event(event):
        return 0
    announce(connection_id)
    return 1
