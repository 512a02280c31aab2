"""Webhooks the unified API sends (docs/upstream-api.md, "Webhooks the unified API
sends"): verify, parse, and act on them.

The receiver (``worker/inbound/receiver.py``) verifies the signature over the raw
body, parses the event and keeps it in the store by its id before it answers;
the task ``entity_sync.upstream_event`` then calls ``process_event``. Every
event is a hint, never state: polling, the preflight and the breakers stay the
truth, and every action here is one the worker could have taken by itself.

    connection.reauthorization_required   halt, as a 401 does: one customer event
    connection.status_changed offline     open the connection's breaker
    connection.status_changed online      let a half-open probe run now, resume parked jobs
    sync.completed                        an incremental sync of those entity types
    sync.failed, connection.error         recorded and classified; shown in status

An event older (``created_at``) than the last one applied for the same
connection and aspect (auth, availability, sync, error) is ignored; a
redelivered id is one row and is processed once. An event outside the
freshness window (``freshness_problem``: too old, or too far ahead of this
clock) is refused at receipt, and marked stale if it leaves the window before
it is processed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import redis
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from worker.coordination import redis_keys
from worker.coordination.lease import Lock
from worker.entities import EntityType
from worker.errors import AuthFailed, Kind, Scope, Unavailable, UpstreamError
from worker.inbound.checks import freshness_problem, unstorable
from worker.jobs import HOUSEKEEPING_QUEUE, SYNC_CONNECTION, SYNC_QUEUE, UPSTREAM_EVENT, Publish
from worker.logs import connection_log, log
from worker.resilience.breaker import Breaker, State
from worker.resilience.classify import Where, action_for, base_scope, error_for_code
from worker.resilience.guard import StateChange
from worker.runtime import Runtime
from worker.store import Run, RunStatus, SqlStore
from worker.store.inbound import UpstreamAspect, UpstreamEvent, UpstreamEventStatus
from worker.sync.preflight import forget_preflight
from worker.timeutil import canonical, canonical_instant, utc_now

UPSTREAM_SIGNATURE_HEADER = "X-Webhook-Signature"  # the unified API signs its webhooks to us here

REAUTHORIZATION_REQUIRED = "connection.reauthorization_required"
STATUS_CHANGED = "connection.status_changed"
SYNC_COMPLETED = "sync.completed"
SYNC_FAILED = "sync.failed"
CONNECTION_ERROR = "connection.error"

# The aspect of a connection each event type speaks about: events are ordered
# by created_at within one aspect only.
ASPECTS = {
    REAUTHORIZATION_REQUIRED: "auth",
    STATUS_CHANGED: "availability",
    SYNC_COMPLETED: "sync",
    SYNC_FAILED: "sync",
    CONNECTION_ERROR: "error",
}


CLAIM_S = 30.0  # one process works on an event at a time


class BadEvent(ValueError):
    """The body is not an event of the contract (the receiver answers 422)."""


class UnparsableBody(BadEvent):
    """The body is not JSON at all (the receiver answers 400)."""


# -- verifying and parsing (the receiver) -------------------------------------------------


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Webhook-Signature`` value of a body (the sandbox sends with it)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secrets: Sequence[bytes], header: str | None, body: bytes) -> bool:
    """Whether ``header`` is ``sha256=<hex HMAC-SHA256 of body>`` under any of ``secrets``.

    Every secret is compared, in constant time, whatever matched before.
    """
    if not header or not secrets:
        return False
    scheme, _, given = header.strip().partition("=")
    if scheme.strip().lower() != "sha256":
        return False
    given_bytes = given.strip().lower().encode("ascii", "replace")
    matched = False
    for secret in secrets:
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        matched |= hmac.compare_digest(expected, given_bytes)
    return matched


_Id = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class InboundEvent(BaseModel):
    """An event of the unified API; fields the contract may add later are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: _Id
    type: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    created_at: str
    connection_id: _Id
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("connection_id", mode="before")
    @classmethod
    def _id_text(cls, value: object) -> object:
        # The status endpoint's id is a string of digits; accept it as a number too.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("created_at")
    @classmethod
    def _instant(cls, value: str) -> str:
        return canonical_instant(value)


def parse_event(body: bytes) -> InboundEvent:
    """The event in a verified body.

    UnparsableBody when the body is not JSON at all: bad UTF-8, bad syntax, or
    nested beyond what the parser takes (a ``RecursionError`` is one such
    answer, never a crash). BadEvent with a short reason when it is JSON but
    not an event of the contract, nests deeper than ``MAX_DEPTH``, or holds a
    string (a key or a value, anywhere, ``data`` included) with a NUL or a
    lone surrogate: PostgreSQL's text refuses both, and an event the store
    cannot keep would be answered 503 at every retry of the sender.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deep" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise UnparsableBody(f"body is not JSON: {reason}") from None
    problem = unstorable(document)
    if problem is not None:
        raise BadEvent(problem)
    try:
        return InboundEvent.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise BadEvent(problems[:300]) from None


def to_record(event: InboundEvent, body: bytes) -> UpstreamEvent:
    """The row the receiver keeps."""
    return UpstreamEvent(
        id=event.id,
        type=event.type,
        upstream_connection_id=event.connection_id,
        created_at=event.created_at,
        received_at=utc_now(),
        body=body.decode("utf-8", "replace"),
    )


# -- acting (the task) -----------------------------------------------------------------


def process_event(rt: Runtime, event_id: str, send: Publish) -> str:
    """Act on one kept event, once; returns what became of it.

    It takes the whole runtime on purpose, as part of the edge: acting on an
    event reads and writes the store, Redis, the breaker, the settings and the
    transition recorder, nearly every part a ``Runtime`` holds. The actions
    below ``_apply`` take only what they use.
    """
    claim = redis_keys.upstream_event_claim(event_id)
    lock, holder = Lock(rt.redis, ttl_s=CLAIM_S), uuid.uuid4().hex
    if not lock.take(claim, holder):
        return "busy"  # another task works on it now
    try:
        return _process(rt, event_id, send)
    finally:
        lock.release(claim, holder)


def _process(rt: Runtime, event_id: str, send: Publish) -> str:
    kept = rt.store.get_upstream_event(event_id)
    if kept is None or kept.status != UpstreamEventStatus.RECEIVED:
        return kept.status if kept else "unknown"
    event = InboundEvent.model_validate_json(kept.body)
    # Ids are the receiver's unified API's: a connection of another base URL never matches.
    base = rt.settings.receiver_upstream_base()
    connections = rt.store.connections_for_upstream_id(base, kept.upstream_connection_id)
    if not connections:
        rt.store.finish_upstream_event(
            event_id,
            UpstreamEventStatus.UNMAPPED,
            outcome="no registered connection has this upstream id yet (learned at a preflight)",
        )
        log.warning(
            "upstream webhook %s (%s) for unknown upstream connection id %s: kept, "
            "applied once a connection's preflight reports that id",
            event.id,
            event.type,
            kept.upstream_connection_id,
        )
        return UpstreamEventStatus.UNMAPPED.value
    stale = freshness_problem(
        kept.created_at,
        now=datetime.now(UTC),
        max_age_s=rt.settings.upstream_event_max_age_seconds,
        skew_s=rt.settings.upstream_event_future_skew_seconds,
    )
    if stale is not None:
        # Fresh at receipt, and too old by now: kept while its connection was
        # unknown, or waiting for a worker longer than the window. Never acted on
        # late, whatever its attempts: a halt or a sync from an old event is a replay.
        rt.store.finish_upstream_event(
            event_id,
            UpstreamEventStatus.STALE,
            outcome=f"too old to apply when processed: {stale}",
            connection_ids=connections,
        )
        return UpstreamEventStatus.STALE.value
    aspect = ASPECTS.get(event.type)
    if aspect is None:
        rt.store.finish_upstream_event(
            event_id,
            UpstreamEventStatus.IGNORED,
            outcome=f"unknown event type {event.type!r}",
            connection_ids=connections,
        )
        return UpstreamEventStatus.IGNORED.value
    outcomes = [_apply(rt, connection_id, aspect, event, send) for connection_id in connections]
    applied = any(done for done, _ in outcomes)
    rt.store.finish_upstream_event(
        event_id,
        UpstreamEventStatus.APPLIED if applied else UpstreamEventStatus.IGNORED,
        outcome="; ".join(
            f"{cid}: {text}" for cid, (_, text) in zip(connections, outcomes, strict=True)
        ),
        connection_ids=connections,
    )
    return (UpstreamEventStatus.APPLIED if applied else UpstreamEventStatus.IGNORED).value


def _apply(
    rt: Runtime, connection_id: str, aspect: str, event: InboundEvent, send: Publish
) -> tuple[bool, str]:
    kind, entity_types, message = _classified(event)
    fresh = rt.store.apply_aspect(
        UpstreamAspect(
            connection_id=connection_id,
            aspect=aspect,
            event_id=event.id,
            event_type=event.type,
            created_at=event.created_at,
            applied_at=utc_now(),
            kind=kind,
            entity_types=",".join(entity_types) or None,
            message=message,
        )
    )
    if not fresh:
        return False, f"older than the last {aspect} event applied: ignored"
    if event.type == REAUTHORIZATION_REQUIRED:
        return True, _reauthorize(
            connection_id,
            event,
            breaker=rt.breaker,
            client=rt.redis,
            transitions=lambda change: rt.transitions(change),  # built only when needed
        )
    if event.type == STATUS_CHANGED:
        return True, _status_changed(rt, connection_id, event)
    if event.type == SYNC_COMPLETED:
        return True, _sync(rt.store, connection_id, event, entity_types, send)
    connection_log.warning(
        "the unified API reports %s: %s",
        event.type,
        message,
        extra={"connection_id": connection_id, "kind": kind, "upstream_event_id": event.id},
    )
    return True, f"recorded ({kind or 'unclassified'})"


def _classified(event: InboundEvent) -> tuple[str | None, list[str], str | None]:
    """(kind by the error table, entity types named, message) of an event."""
    data = event.data
    raw_types = data.get("entity_types")
    if not isinstance(raw_types, list):
        single = data.get("entity_type")
        raw_types = [single] if isinstance(single, str) else []
    types = [t for t in raw_types if isinstance(t, str) and t in EntityType._value2member_map_]
    text = data.get("message") or data.get("reason") or data.get("status")
    message = str(text)[:500] if text is not None else None
    if event.type == SYNC_FAILED:
        # The unified API's own refresh failed: the source is failing now.
        scope = Scope.ENTITY_TYPE if types else Scope.CONNECTION
        action = action_for(Kind.UNAVAILABLE, scope)
        return Kind.UNAVAILABLE.value, types, f"{message or 'sync failed'} (rule: {action})"
    if event.type == CONNECTION_ERROR:
        code = data.get("code")
        error = error_for_code(code if isinstance(code, str) else None, message or "")
        shown = f"{code}: {message}" if code else (message or "")
        if error is None:
            return None, types, f"{shown} (code not in the error table)"
        scope = base_scope(error.kind, Where.LIST if types else Where.STATUS)
        return error.kind.value, types, f"{shown} (rule: {action_for(error.kind, scope)})"
    return None, types, message


def _reauthorize(
    connection_id: str,
    event: InboundEvent,
    *,
    breaker: Breaker,
    client: redis.Redis,
    transitions: Callable[[StateChange], object],
) -> str:
    """Halt through the path a 401 takes: one transition, one customer event."""
    detail = str(event.data.get("reason") or "the unified API reports re-authorisation required")
    reason = f"upstream webhook: {detail}"[:300]
    change = breaker.halt(connection_id, reason)
    forget_preflight(client, connection_id)
    if not change.transitioned:
        return "halted already"
    cause = AuthFailed(detail[:300], code="REAUTHORIZATION_REQUIRED")
    transitions(
        StateChange(connection_id, None, change.from_state, change.state, reason, None, cause)
    )
    return "halted"


def _status_changed(rt: Runtime, connection_id: str, event: InboundEvent) -> str:
    status = str(event.data.get("status") or "").lower()
    view = rt.breaker.show(connection_id)
    if view.connection.state is State.HALTED:
        return f"{status or 'status'} noted; the connection is halted (re-authorise it)"
    if status == "offline":
        seconds = rt.settings.upstream_offline_open_seconds
        until = view.connection.until or 0.0
        if view.connection.state is State.OPEN and until >= view.now + seconds:
            return "breaker open already, for longer"  # never shorten an open breaker
        reason = "upstream webhook: the customer's system is offline"
        change = rt.breaker.force_open(connection_id, seconds=seconds, reason=reason)
        if change.transitioned:
            cause: UpstreamError = Unavailable(reason, code="CONNECTION_OFFLINE")
            rt.transitions(
                StateChange(
                    connection_id,
                    None,
                    change.from_state,
                    change.state,
                    reason,
                    change.until,
                    cause,
                )
            )
        return "breaker open"
    if status == "online":
        probing = view.connection.state is State.OPEN
        if probing:
            # Its open time ends now: the next admission is the half-open probe.
            rt.breaker.force_open(
                connection_id, seconds=0.001, reason="upstream webhook: online again, probe now"
            )
        forget_preflight(rt.redis, connection_id)
        resumed = rt.store.parked_due_now(connection_id)
        return f"{'probe allowed, ' if probing else ''}{resumed} parked job(s) resumed"
    return f"unknown status {status!r}: ignored"


def _sync(
    store: SqlStore, connection_id: str, event: InboundEvent, named: list[str], send: Publish
) -> str:
    """Sync the named entity types soon; a pair with a run still queued joins that run."""
    connection = store.get_connection(connection_id)
    types = [t for t in (named or connection.entity_types) if t in connection.entity_types]
    if not types:
        return "none of its entity types: nothing to sync"
    queued = store.queued_runs_of(connection_id)
    request_id = f"upstream-{event.id}"[:100]
    for entity in (t for t in types if t in queued):
        now = utc_now()
        store.record_run(
            Run(
                id=str(uuid.uuid4()),
                connection_id=connection_id,
                entity_type=entity,
                status=RunStatus.SKIPPED,
                started_at=now,
                finished_at=now,
                request_id=request_id,
                trigger="upstream",
                coalesced_into=queued[entity],
                error_message=f"coalesced: run {queued[entity]} is queued and reads the new data",
            )
        )
    wanted = [t for t in types if t not in queued]
    if wanted:
        send(
            SYNC_CONNECTION,
            {
                "connection_id": connection_id,
                "entity_types": wanted,
                "trigger": "upstream",
                "request_id": request_id,
            },
            SYNC_QUEUE,
        )
    joined = f", {len(types) - len(wanted)} joined a queued run" if len(wanted) < len(types) else ""
    return f"sync of {', '.join(wanted) or 'nothing new'} enqueued{joined}"


def sweep(store: SqlStore, send: Publish, *, older_than_s: float = 5.0) -> int:
    """Enqueue processing of every kept event still waiting (its enqueue was lost)."""
    before = canonical(datetime.now(UTC) - timedelta(seconds=older_than_s))
    ids = store.unprocessed_upstream_events(received_before=before)
    for event_id in ids:
        send(UPSTREAM_EVENT, {"event_id": event_id}, HOUSEKEEPING_QUEUE)
    return len(ids)


def event_json(event: UpstreamEvent) -> dict[str, Any]:
    """An event for ``entity-sync upstream-events --json``."""
    return {
        "id": event.id,
        "type": event.type,
        "upstream_connection_id": event.upstream_connection_id,
        "created_at": event.created_at,
        "received_at": event.received_at,
        "status": event.status,
        "connection_ids": event.connection_ids,
        "outcome": event.outcome,
        "data": json.loads(event.body).get("data"),
    }
