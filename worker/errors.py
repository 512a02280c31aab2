"""The project's own exceptions: one root, a shallow tree.

    EntitySyncError             root of everything entity-sync raises on purpose
    ├── ConfigError             a setting is missing or wrong (names the variable)
    ├── PayloadError            a job payload failed validation
    ├── UnknownConnection       no connection with that id in the registry
    ├── UnknownEvent            no event with that id in the outbox
    ├── ConnectionExists        a connection with that id is already registered
    ├── SecretError             a stored secret cannot be decrypted with the keys given
    ├── StoreError              the SQL store failed or is unreachable
    ├── CoordinationError       Redis is unreachable or a script failed
    ├── Deferred                not a failure: come back at ``until`` (breaker, pause)
    ├── Halted                  the connection is halted until it is re-authorised
    ├── Blocked                 this entity type is blocked (403/404) until a re-probe
    ├── RetryLater              a transient failure: retry this job with backoff
    └── UpstreamError           the unified API call failed; carries a Kind
        ├── AuthFailed          401: the token no longer works
        ├── PermissionDenied    403: this entity type may not be read
        ├── NotSupported        404: the source system has no such entity type
        ├── RateLimited         429: come back after retry_after seconds
        ├── BadRequest          400/422: our request was malformed
        ├── Unavailable         5xx, refused, DNS, TLS, timeouts: try again later
        └── BadResponse         an answer that breaks the contract (not JSON, no data)

Third-party exceptions (httpx, redis, sqlite3, psycopg) are translated into
these at the module that talks to them, with ``raise ... from exc``;
``error_for_status`` says which UpstreamError an HTTP status is.
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """What went wrong, independent of how far it reaches."""

    AUTH = "auth"
    PERMISSION = "permission"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    NOT_SUPPORTED = "not_supported"
    BAD_REQUEST = "bad_request"
    BAD_DATA = "bad_data"
    BUG = "bug"


class Scope(StrEnum):
    """How far a failure reaches."""

    RECORD = "record"
    ENTITY_TYPE = "entity_type"
    CONNECTION = "connection"


class EntitySyncError(Exception):
    """Root of every exception entity-sync raises on purpose."""


class ConfigError(EntitySyncError):
    """A setting is missing or wrong; the message names the variable."""


class PayloadError(EntitySyncError):
    """A job payload failed validation."""


class UnknownConnection(EntitySyncError):
    """No connection with that id is registered."""


class UnknownEvent(EntitySyncError):
    """No event with that id is in the outbox."""


class ConnectionExists(EntitySyncError):
    """A connection with that id is already registered."""


class SecretError(EntitySyncError):
    """A stored secret cannot be decrypted with the configured keys."""


class StoreError(EntitySyncError):
    """The SQL store failed or is unreachable."""


class CoordinationError(EntitySyncError):
    """Redis is unreachable or one of our scripts failed."""


class Deferred(EntitySyncError):
    """Not a failure: a breaker, pause or busy slot says come back at ``until``.

    ``until`` is in unix seconds. A deferred job is parked and burns no retry.
    """

    def __init__(self, reason: str, *, until: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.until = until


class Halted(EntitySyncError):
    """The connection is halted (its credentials stopped working)."""


class Blocked(EntitySyncError):
    """This entity type is blocked (403/404) until a slow re-probe succeeds."""


class RetryLater(EntitySyncError):
    """A transient failure: retry the job after backoff, no sooner than ``retry_after``."""

    def __init__(self, reason: str, *, kind: Kind, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.retry_after = retry_after


class UpstreamError(EntitySyncError):
    """A call to the unified API failed.

    ``status`` is the HTTP status (None when no response arrived), ``code`` and
    ``detail`` come from the error body when it had one, ``retry_after`` is in
    seconds (already parsed and clamped), ``request_id`` is the upstream's.
    """

    kind: Kind = Kind.BUG

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.request_id = request_id

    def __str__(self) -> str:
        parts = [self.kind.value]
        if self.status is not None:
            parts.append(str(self.status))
        if self.code:
            parts.append(self.code)
        return f"{' '.join(parts)}: {self.detail}"


class AuthFailed(UpstreamError):
    """401: the connection's token no longer works; it needs re-authorisation."""

    kind = Kind.AUTH


class PermissionDenied(UpstreamError):
    """403: the connected account may not read this entity type."""

    kind = Kind.PERMISSION


class NotSupported(UpstreamError):
    """404: the source system has no such entity type."""

    kind = Kind.NOT_SUPPORTED


class RateLimited(UpstreamError):
    """429: too many requests for this connection; see ``retry_after``."""

    kind = Kind.RATE_LIMITED


class BadRequest(UpstreamError):
    """400/422: the request we sent was malformed."""

    kind = Kind.BAD_REQUEST


class Unavailable(UpstreamError):
    """The upstream or the customer's system cannot answer right now."""

    kind = Kind.UNAVAILABLE


class BadResponse(UpstreamError):
    """An answer that breaks the contract: not JSON, no ``data``, truncated."""

    kind = Kind.BAD_DATA


def error_for_status(
    status: int,
    code: str | None,
    detail: str,
    retry_after: float | None = None,
    request_id: str | None = None,
) -> UpstreamError:
    """Return the exception for an HTTP error status (the error table of docs/upstream-api.md).

    The status decides, not ``code``: a proxy's HTML 502 has no code at all.
    Unknown 4xx are BadRequest (our request), except 408 which is a timeout
    (Unavailable); every 5xx is Unavailable, including 500 INTERNAL_ERROR;
    anything else (1xx, 2xx, 3xx, nonsense) breaks the contract: BadResponse.
    """
    cls: type[UpstreamError]
    if status in (400, 422):
        cls = BadRequest
    elif status == 401:
        cls = AuthFailed
    elif status == 403:
        cls = PermissionDenied
    elif status == 404:
        cls = NotSupported
    elif status == 429:
        cls = RateLimited
    elif status == 408:
        # Request Timeout: the server gave up waiting; the request was fine.
        cls = Unavailable
    elif 400 <= status <= 499:
        cls = BadRequest
    elif 500 <= status <= 599:
        cls = Unavailable
    else:
        cls = BadResponse
    return cls(detail, status=status, code=code, retry_after=retry_after, request_id=request_id)
