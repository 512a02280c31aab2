"""Outcome -> verdict: what went wrong, how far it reaches, and what to do.

Pure: no I/O, no clock. Every failure is classified on two axes (principle 3
of docs/design.md): its *kind* (from the exception, see ``worker.errors``) and
its *scope* (one record, one entity type, the whole connection). One rule
table maps (kind, scope) to one action, and only ``action_for`` reads it:

    kind \\ scope     record          entity_type     connection
    auth             halt            halt            halt
    permission       quarantine      block_entity    halt
    rate_limited     pause           pause           pause
    unavailable      retry           retry           open_breaker
    not_supported    quarantine      block_entity    halt
    bad_request      fail            fail            fail
    bad_data         quarantine      retry           open_breaker
    bug              fail            fail            fail

How the scope is found (``base_scope``, then escalation in ``classify``):

- auth and rate_limited always reach the connection: a 401 is per token and a
  429's Retry-After is authoritative for the whole connection.
- any failure of the status endpoint reaches the connection.
- a failure of an entity list page reaches that entity type ...
- ... until evidence escalates it: when the same kind has hit ``escalate_at``
  distinct entity types of the connection within the window (counted in Redis
  by the caller), entity_type scope becomes connection scope. So a 403 on every
  entity type is an account problem (halt), while a 500 on one entity type
  whose siblings succeed stays with that entity type (retry).
- a problem inside one record of a good page reaches only that record.

``defer`` is not in the table: it is the action for outcomes that are not
failures at all (an open breaker, a pause, no free rate slot), built with
``deferral``. Which exception (and so which kind) an HTTP status is belongs to
the exception tree (``worker.errors.error_for_status``), so the upstream
client raises our errors without knowing this table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

from worker.errors import (
    AuthFailed,
    Kind,
    Scope,
    Unavailable,
    UpstreamError,
    error_for_status,
)
from worker.redaction import redact

__all__ = [
    "Action",
    "RULES",
    "Rule",
    "Verdict",
    "Where",
    "action_for",
    "base_scope",
    "classify",
    "classify_record_problem",
    "deferral",
    "error_for_sync_status",
]


class Action(StrEnum):
    """What the worker does about an outcome."""

    RETRY = "retry"  # retry with backoff (within the connection's retry budget)
    PAUSE = "pause"  # pause the whole connection until retry_after
    OPEN_BREAKER = "open_breaker"  # open the connection's breaker
    HALT = "halt"  # halt the connection and notify a person (re-authorise)
    BLOCK_ENTITY = "block_entity"  # stop syncing this entity type (403/404)
    QUARANTINE = "quarantine"  # set one record aside, keep the page
    FAIL = "fail"  # permanent for this job: no retry (our request or our code)
    DEFER = "defer"  # not a failure: park the job until it is due


class Where(StrEnum):
    """Which call produced the outcome."""

    STATUS = "status"  # GET /api/integrations/current
    LIST = "list"  # one page of GET /api/eam/{entity}
    RECORD = "record"  # one record inside a good page


class Rule(NamedTuple):
    """One row of the rule table: (kind, scope) -> action, and why."""

    kind: Kind
    scope: Scope
    action: Action
    why: str


_R, _E, _C = Scope.RECORD, Scope.ENTITY_TYPE, Scope.CONNECTION

RULES: tuple[Rule, ...] = (
    # auth: a 401 means the token is dead; nothing but re-authorisation helps,
    # and base_scope always makes it connection-wide. The other two rows exist
    # so the table is total, and say the same.
    Rule(Kind.AUTH, _R, Action.HALT, "a dead token cannot be localised to one record"),
    Rule(Kind.AUTH, _E, Action.HALT, "a token is per connection, not per entity type"),
    Rule(Kind.AUTH, _C, Action.HALT, "token no longer valid: stop calling, ask to re-authorise"),
    # permission: "the connected account may not read this entity type (others
    # may still work)" -- so block that type; on every type it is the account.
    Rule(Kind.PERMISSION, _R, Action.QUARANTINE, "one unreadable record; keep the rest"),
    Rule(Kind.PERMISSION, _E, Action.BLOCK_ENTITY, "account may not read this entity type"),
    Rule(Kind.PERMISSION, _C, Action.HALT, "403 everywhere: account problem, a person must act"),
    # rate_limited: Retry-After is authoritative for the whole connection, so
    # every row pauses the connection (retrying one entity type would just
    # spend the shared quota again).
    Rule(Kind.RATE_LIMITED, _R, Action.PAUSE, "quota is per connection"),
    Rule(Kind.RATE_LIMITED, _E, Action.PAUSE, "quota is per connection"),
    Rule(Kind.RATE_LIMITED, _C, Action.PAUSE, "come back after Retry-After"),
    # unavailable: transient. One entity type failing is retried (its own
    # breaker counts it); the whole connection failing opens the breaker so
    # no worker keeps hammering an offline customer system.
    Rule(Kind.UNAVAILABLE, _R, Action.RETRY, "transient; the record is fetched again"),
    Rule(Kind.UNAVAILABLE, _E, Action.RETRY, "transient, siblings succeed; entity breaker counts"),
    Rule(Kind.UNAVAILABLE, _C, Action.OPEN_BREAKER, "customer system offline: stop calling"),
    # not_supported: the source system has no such entity type. On every
    # type (or on the status endpoint) the connection itself is wrong or gone
    # upstream; retrying cannot fix that, a person must look.
    Rule(Kind.NOT_SUPPORTED, _R, Action.QUARANTINE, "one record cannot be resolved"),
    Rule(Kind.NOT_SUPPORTED, _E, Action.BLOCK_ENTITY, "source system has no such entity type"),
    Rule(Kind.NOT_SUPPORTED, _C, Action.HALT, "404 everywhere: connection gone or misconfigured"),
    # bad_request: we sent something malformed; the same request fails the
    # same way, so retrying only burns quota. Fail loudly instead.
    Rule(Kind.BAD_REQUEST, _R, Action.FAIL, "our request is wrong; retry repeats it"),
    Rule(Kind.BAD_REQUEST, _E, Action.FAIL, "our request is wrong; retry repeats it"),
    Rule(Kind.BAD_REQUEST, _C, Action.FAIL, "our request is wrong; retry repeats it"),
    # bad_data: one bad record is set aside (principle 9); a broken page
    # (truncated, not JSON) is usually a flaky proxy, so retry; garbage on
    # every entity type means the server is broken: breaker.
    Rule(Kind.BAD_DATA, _R, Action.QUARANTINE, "one malformed record; keep the page"),
    Rule(Kind.BAD_DATA, _E, Action.RETRY, "broken page, often a flaky proxy: try again"),
    Rule(Kind.BAD_DATA, _C, Action.OPEN_BREAKER, "server answers garbage everywhere: stop"),
    # bug: our code failed. Failing the job makes it loud (Sentry) instead of
    # burying it in retries or quarantine; the next scheduled run tries again.
    Rule(Kind.BUG, _R, Action.FAIL, "our code failed; make it loud"),
    Rule(Kind.BUG, _E, Action.FAIL, "our code failed; make it loud"),
    Rule(Kind.BUG, _C, Action.FAIL, "our code failed; make it loud"),
)


def _index(rules: tuple[Rule, ...]) -> Mapping[tuple[Kind, Scope], Action]:
    """Index the rows, refusing a table with a missing or duplicated (kind, scope)."""
    index: dict[tuple[Kind, Scope], Action] = {}
    for rule in rules:
        key = (rule.kind, rule.scope)
        if key in index:
            raise ValueError(f"rule table has two rows for {key}")
        index[key] = rule.action
    missing = {(k, s) for k in Kind for s in Scope} - index.keys()
    if missing:
        raise ValueError(f"rule table has no row for {sorted(missing)}")
    return MappingProxyType(index)


_TABLE = _index(RULES)

# Kinds that say the upstream is unhealthy and so count towards a breaker trip
# (docs/design.md, pitfalls: timeouts, 5xx, connection errors; not 4xx, 429 or cancellations).
_COUNTING_KINDS = frozenset({Kind.UNAVAILABLE, Kind.BAD_DATA})
# Actions after which the same work may succeed later without anyone acting.
_TRANSIENT_ACTIONS = frozenset({Action.RETRY, Action.PAUSE, Action.OPEN_BREAKER, Action.DEFER})


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The classifier's decision about one outcome.

    ``retry_after`` is in seconds (from the upstream, or None when it gave
    none); ``counts_as_failure`` says whether the outcome counts towards a
    breaker trip; ``transient`` whether the same work may later succeed without
    anyone acting; ``summary`` is a short, secret-free line for logs and status.
    """

    kind: Kind
    scope: Scope
    action: Action
    retry_after: float | None
    counts_as_failure: bool
    transient: bool
    summary: str


def action_for(kind: Kind, scope: Scope) -> Action:
    """Return the table's action for (kind, scope): the one place it is read."""
    return _TABLE[(kind, scope)]


def base_scope(kind: Kind, where: Where) -> Scope:
    """Return how far an outcome of this kind at this call reaches, before evidence."""
    if kind in (Kind.AUTH, Kind.RATE_LIMITED):
        # Contract: a 401 is per token, and a 429's Retry-After binds the
        # whole connection whichever entity type received it.
        return Scope.CONNECTION
    if where is Where.STATUS:
        # The status endpoint describes the connection itself.
        return Scope.CONNECTION
    if where is Where.RECORD:
        return Scope.RECORD
    # A list page: assume only this entity type until other types fail too.
    return Scope.ENTITY_TYPE


def classify(
    error: BaseException,
    *,
    where: Where,
    distinct_entity_types_failing: int = 0,
    escalate_at: int = 2,
) -> Verdict:
    """Classify an exception raised at ``where`` into a verdict; never raises.

    ``distinct_entity_types_failing`` is how many distinct entity types of this
    connection failed with the same kind within the window, *including* this
    one (counted in Redis by the caller). At ``escalate_at`` or more, an
    entity_type scope becomes connection scope. Any exception that is not an
    ``UpstreamError`` is a bug of ours: kind bug, action fail, not transient.
    Cancellations (KeyboardInterrupt, CancelledError, ...) are classified like
    any other non-upstream exception; the caller should re-raise them.
    """
    try:
        return _classify(error, where, distinct_entity_types_failing, escalate_at)
    except Exception as exc:  # the classifier must never crash a worker
        return _verdict(
            Kind.BUG,
            Scope.CONNECTION if where is Where.STATUS else Scope.ENTITY_TYPE,
            retry_after=None,
            summary=f"classifier failed on {_type_name(error)}: {_type_name(exc)}",
        )


def classify_record_problem(reason: str) -> Verdict:
    """Verdict for one malformed record inside a good page: quarantine it."""
    return _verdict(
        Kind.BAD_DATA,
        Scope.RECORD,
        retry_after=None,
        summary=f"bad record: {_clean(reason)}",
    )


def deferral(*, kind: Kind, scope: Scope, retry_after: float | None, reason: str) -> Verdict:
    """Verdict for an outcome that is not a failure: park the job until it is due.

    Used when a breaker is open, the connection is paused, or no rate slot is
    free. ``kind`` names what caused the wait (unavailable for a breaker,
    rate_limited for a pause or slot). A deferral never counts as a failure
    and burns no retry (principle 4).
    """
    return Verdict(
        kind=kind,
        scope=scope,
        action=Action.DEFER,
        retry_after=_clean_retry_after(retry_after),
        counts_as_failure=False,
        transient=True,
        summary=f"{kind}/{scope} -> {Action.DEFER}: {_clean(reason)}",
    )


# The error codes of docs/upstream-api.md ("Errors") and the status each
# comes with: an upstream webhook (connection.error) carries a code but no
# status, and is classified through the same table as an answer would be.
CODE_STATUS: Mapping[str, int] = {
    "INVALID_REQUEST": 400,
    "AUTHENTICATION_FAILED": 401,
    "PERMISSION_DENIED": 403,
    "ENTITY_NOT_SUPPORTED": 404,
    "RATE_LIMIT_EXCEEDED": 429,
    "INTERNAL_ERROR": 500,
    "CONNECTION_OFFLINE": 503,
    "SOURCE_TIMEOUT": 504,
}


def error_for_code(code: str | None, detail: str) -> UpstreamError | None:
    """The exception an error code implies (no HTTP status known); None for a code
    the contract does not list."""
    status = CODE_STATUS.get(code or "")
    if status is None:
        return None
    error = error_for_status(status, code, detail)
    error.status = None  # it was a code, not an answer
    return error


def error_for_sync_status(
    sync_status: str, *, request_id: str | None = None
) -> UpstreamError | None:
    """Return the exception a status endpoint's ``sync_status`` implies, if any.

    ``fail``: the source system rejected the stored credentials (AuthFailed).
    ``error``: the source system is failing or unreachable now (Unavailable).
    Anything else is healthy (the contract says so): None.
    """
    if sync_status == "fail":
        return AuthFailed(
            "source system rejected the stored credentials (sync_status=fail)",
            code="SYNC_STATUS_FAIL",
            request_id=request_id,
        )
    if sync_status == "error":
        return Unavailable(
            "source system failing or unreachable (sync_status=error)",
            code="SYNC_STATUS_ERROR",
            request_id=request_id,
        )
    return None


def _classify(error: BaseException, where: Where, failing: int, escalate_at: int) -> Verdict:
    """Classify without the safety net; see ``classify``."""
    where = Where(where)
    if isinstance(error, UpstreamError):
        kind = Kind(error.kind)
        retry_after = getattr(error, "retry_after", None)
        summary = _upstream_summary(error)
    else:
        kind = Kind.BUG
        retry_after = None
        # Only the type name: str() of a foreign exception may hold anything.
        summary = _type_name(error)
    scope = base_scope(kind, where)
    # An escalate_at below 1 would escalate on no evidence at all.
    if scope is Scope.ENTITY_TYPE and failing >= max(escalate_at, 1):
        scope = Scope.CONNECTION
    return _verdict(kind, scope, retry_after=retry_after, summary=summary)


def _verdict(kind: Kind, scope: Scope, *, retry_after: object, summary: str) -> Verdict:
    """Build a verdict from kind and scope, reading the table via ``action_for``."""
    action = action_for(kind, scope)
    return Verdict(
        kind=kind,
        scope=scope,
        action=action,
        retry_after=_clean_retry_after(retry_after),
        counts_as_failure=_counts_as_failure(kind, scope),
        transient=action in _TRANSIENT_ACTIONS,
        summary=f"{kind}/{scope} -> {action}: {summary}",
    )


def _counts_as_failure(kind: Kind, scope: Scope) -> bool:
    """Whether the outcome says the upstream is unhealthy (counts towards a trip)."""
    if kind is Kind.BAD_DATA and scope is Scope.RECORD:
        # One bad record inside a good page says nothing about upstream health:
        # the server answered, and answered in time.
        return False
    return kind in _COUNTING_KINDS


def _upstream_summary(error: UpstreamError) -> str:
    """Status, code, request id and a trimmed, redacted detail."""
    parts: list[str] = []
    status = getattr(error, "status", None)
    if isinstance(status, int):
        parts.append(str(status))
    code = getattr(error, "code", None)
    if isinstance(code, str) and code:
        parts.append(_clean(code, limit=40))
    request_id = getattr(error, "request_id", None)
    if isinstance(request_id, str) and request_id:
        parts.append(f"[{_clean(request_id, limit=40)}]")
    detail = getattr(error, "detail", None)
    if isinstance(detail, str) and detail.strip():
        parts.append(_clean(detail))
    return " ".join(parts) or _type_name(error)


def _clean_retry_after(value: object) -> float | None:
    """Keep a usable number of seconds; drop NaN, inf and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


_SPACE = re.compile(r"\s+")


def _clean(text: str, *, limit: int = 160) -> str:
    """One line, no credentials (``worker.redaction.redact``), at most ``limit`` characters."""
    line = _SPACE.sub(" ", redact(text)).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _type_name(obj: object) -> str:
    """The qualified class name, which never runs user code (unlike str())."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"
