"""Signed webhook delivery: the signature schemes, one guarded POST, retry arithmetic.

- ``sign_standard``         Standard Webhooks (https://www.standardwebhooks.com):
                            ``webhook-id``, ``webhook-timestamp`` and
                            ``webhook-signature: v1,<base64>`` (space-separated, one
                            per active secret), HMAC-SHA256 over "<id>.<t>.<body>"
                            keyed with ``signing_key(secret)``
- ``sign`` / ``verify``     the deprecated ``X-EntitySync-Signature: t=<unix>,v1=<hex>``,
                            where v1 is HMAC-SHA256(secret, "<t>." + body); still sent
                            for one release (docs/webhooks.md)
- ``new_secret``,           secrets in the spec's ``whsec_`` + base64 form, and how a
  ``signing_key``,          secret set before that form maps to a Standard Webhooks key
  ``standard_form``
- ``WebhookClient``         an httpx client for customer endpoints: no redirects,
                            explicit timeouts, a capped response read, on the one
                            deadline transport (``worker.upstream.transport``)
                            with the SSRF guard of
                            ``worker.outbox.destinations.guarded_transport``
- ``deliver``               one attempt; every outcome is a DeliveryResult, nothing
                            raises for network problems
- ``next_attempt_delay``,   capped full-jitter backoff and the 24 h dead-letter rule
  ``is_expired``

With ``worker.outbox.destinations`` this is the webhook edge's only user of httpx, as
``worker.upstream.client`` is for the unified API. The secret is only ever an HMAC key:
it is never sent, logged, or put in a reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import random
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ssl import SSLContext
from types import TracebackType

import httpx

from worker.outbox.destinations import (
    InvalidWebhookUrl,
    Resolver,
    check_destination,
    guarded_transport,
    system_resolve,
)
from worker.resilience.backoff import full_jitter
from worker.upstream.transport import DeadlineExceeded

# Standard Webhooks headers (lower case, as the spec writes them).
WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's prefix, not a secret
# The spec's key length bounds; a whsec_ secret outside them is a legacy secret.
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64
# Deprecated: kept for one release next to the Standard Webhooks headers.
SIGNATURE_HEADER = "X-EntitySync-Signature"
EVENT_ID_HEADER = "X-EntitySync-Event-Id"
EVENT_TYPE_HEADER = "X-EntitySync-Event-Type"
USER_AGENT = "entity-sync-webhooks/0.1"
DEFAULT_TOLERANCE_S = 300
MAX_RESPONSE_BYTES = 64 * 1024

# Bounds on what verify() will look at, so a hostile header costs little work.
_MAX_HEADER_CHARS = 4096
_MAX_SIGNATURES = 8
_TIMESTAMP = re.compile(r"[0-9]{1,12}", re.ASCII)
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}", re.ASCII)
_HEADER_TOKEN = re.compile(r"[\x21-\x7e]{1,200}", re.ASCII)

log = logging.getLogger("entity_sync.webhooks")


def new_secret() -> str:
    """A fresh endpoint secret in the Standard Webhooks form: ``whsec_`` + base64 of 32
    random bytes (what `entity-sync keygen --webhook` prints)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signing_key(secret: str) -> bytes:
    """The HMAC key of the Standard Webhooks signature for ``secret``.

    A secret in the spec's form (``whsec_`` + standard base64 of 24 to 64 bytes)
    is the base64-decoded bytes, as every Standard Webhooks library reads it.
    Any other secret (``whsec_`` + URL-safe base64 without padding, as some
    stored secrets are, or any other text) is a legacy
    secret: its key is the UTF-8 bytes of the whole secret, the same key the
    deprecated ``X-EntitySync-Signature`` uses. ``standard_form`` gives the
    ``whsec_`` secret a receiver's library needs for it.
    """
    if not secret:
        raise ValueError("a webhook secret must not be empty")
    key = _standard_key(secret)
    return key if key is not None else secret.encode("utf-8")


def standard_form(secret: str) -> str:
    """The ``whsec_`` + base64 secret a Standard Webhooks library verifies with."""
    return SECRET_PREFIX + base64.b64encode(signing_key(secret)).decode("ascii")


def sign_standard(
    secrets_in_use: Sequence[str], message_id: str, timestamp: int, body: bytes
) -> str:
    """The ``webhook-signature`` value: ``v1,<base64>`` per secret, space-separated.

    The current secret comes first; one still inside its rotation window
    adds a second signature, and a receiver accepts the message if any matches.
    """
    if isinstance(timestamp, bool) or timestamp < 0:
        raise ValueError("timestamp must be a non-negative unix time in seconds")
    if not secrets_in_use:
        raise ValueError("at least one webhook secret is needed")
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1,"
        + base64.b64encode(hmac.new(signing_key(key), signed, hashlib.sha256).digest()).decode(
            "ascii"
        )
        for key in secrets_in_use
    )


def sign(secret: str, timestamp: int, body: bytes, *, previous: Sequence[str] = ()) -> str:
    """Return the signature header value ``t=<timestamp>,v1=<hex>[,v1=<hex>...]``.

    The first v1 uses ``secret``; each of ``previous`` adds one more, so a
    receiver still holding an older secret keeps verifying during a rotation.
    """
    if isinstance(timestamp, bool) or timestamp < 0:
        raise ValueError("timestamp must be a non-negative unix time in seconds")
    parts = [f"t={timestamp}"]
    for key in (secret, *previous):
        if not key:
            raise ValueError("a webhook secret must not be empty")
        parts.append(f"v1={_digest(key, timestamp, body)}")
    return ",".join(parts)


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    now: int,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> bool:
    """Say whether ``header`` is a valid signature of ``body`` made within ``tolerance_s``.

    The reference verifier for integrators: constant-time comparison, any one
    matching v1 suffices, timestamps further than ``tolerance_s`` from ``now``
    (past or future) are refused, and garbage of any kind returns False.
    """
    parsed = _parse_signature(header)
    if parsed is None or not secret:
        return False
    timestamp, candidates = parsed
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = _digest(secret, timestamp, body).encode("ascii")
    matched = False
    for candidate in candidates:
        # No early exit: the time taken does not say which value matched.
        matched |= hmac.compare_digest(expected, candidate.encode("ascii"))
    return matched


@dataclass(frozen=True, kw_only=True)
class DeliveryResult:
    """The outcome of one attempt.

    ``status`` is the HTTP status (None when no response arrived). ``retryable``
    is False only when retrying cannot help until someone changes the
    configuration (the URL breaks a static rule). ``reason`` is safe to log.
    """

    delivered: bool
    status: int | None
    reason: str
    retryable: bool = True
    duration_s: float = 0.0


class WebhookClient:
    """A pooled client for customer endpoints; call ``close()`` (or use ``with``)."""

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        write_timeout: float = 10.0,
        pool_timeout: float = 5.0,
        deadline_s: float = 20.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        allow_http: bool = False,
        allow_private: bool = False,
        resolve: Resolver = system_resolve,
        max_connections: int = 20,
        ssl_context: SSLContext | None = None,
    ) -> None:
        self.allow_http = allow_http
        self.allow_private = allow_private
        self.deadline_s = deadline_s
        self._max_bytes = max_response_bytes
        self._http = httpx.Client(
            transport=guarded_transport(
                allow_private=allow_private,
                deadline_s=deadline_s,
                resolve=resolve,
                max_connections=max_connections,
                ssl_context=ssl_context,
            ),
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=write_timeout, pool=pool_timeout
            ),
            follow_redirects=False,
            # No proxies from the environment: a proxy would resolve the name
            # itself and the connect-time address check would see the proxy.
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
        )

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def __enter__(self) -> WebhookClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def post(self, url: str, *, body: bytes, headers: dict[str, str]) -> DeliveryResult:
        """POST ``body`` once; map every outcome, and every httpx error, to a result."""
        started = time.monotonic()
        deadline = started + self.deadline_s
        try:
            with self._http.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code
                self._drain(response)
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            return DeliveryResult(
                delivered=False,
                status=None,
                reason=self._reason(exc, deadline),
                duration_s=time.monotonic() - started,
            )
        elapsed = time.monotonic() - started
        if 200 <= status < 300:
            return DeliveryResult(
                delivered=True, status=status, reason=f"HTTP {status}", duration_s=elapsed
            )
        # Following a redirect would send the signed event somewhere the
        # customer never registered, past the URL checks; refuse instead.
        reason = f"redirect refused (HTTP {status})" if 300 <= status < 400 else f"HTTP {status}"
        return DeliveryResult(delivered=False, status=status, reason=reason, duration_s=elapsed)

    def _drain(self, response: httpx.Response) -> None:
        # The status line is the receiver's answer and the body is ignored.
        # Reading a little lets a short answer finish cleanly (and the
        # connection be reused); past the cap, or when the body fails or
        # trickles past the deadline, we stop and closing drops the connection.
        size = 0
        try:
            for chunk in response.iter_raw():
                size += len(chunk)
                if size >= self._max_bytes:
                    return
        except (httpx.HTTPError, httpx.StreamError):
            return

    def _reason(self, exc: Exception, deadline: float) -> str:
        # The connector's refusal travels up through httpcore and httpx, which
        # do not all chain with ``from``; look through causes and contexts.
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, InvalidWebhookUrl):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            return f"destination refused: {cause}"
        if isinstance(exc, httpx.TimeoutException):
            if isinstance(exc, DeadlineExceeded) or time.monotonic() >= deadline:
                return f"no complete answer within the {self.deadline_s:g}s deadline"
            return f"timed out ({type(exc).__name__})"
        if isinstance(exc, httpx.ConnectError):
            return f"connection failed: {exc}"[:300]
        return f"{type(exc).__name__}: {exc}"[:300]


def deliver(
    client: WebhookClient,
    url: str,
    *,
    secret: str,
    event_id: str,
    event_type: str,
    body: bytes,
    now: int,
    previous_secrets: Sequence[str] = (),
) -> DeliveryResult:
    """Sign ``body`` at ``now`` and POST it to ``url`` once.

    ``body`` is the event JSON, already encoded; a redelivery sends the same
    ``event_id`` with a fresh signature. Raises ValueError only for a caller's
    bug (an id or type that cannot be a header value, an empty secret).
    """
    for name, value in (("event_id", event_id), ("event_type", event_type)):
        if not _HEADER_TOKEN.fullmatch(value):
            raise ValueError(f"{name} must be 1-200 visible ASCII characters")
    headers = {
        "Content-Type": "application/json",
        WEBHOOK_ID_HEADER: event_id,
        WEBHOOK_TIMESTAMP_HEADER: str(now),
        WEBHOOK_SIGNATURE_HEADER: sign_standard((secret, *previous_secrets), event_id, now, body),
        SIGNATURE_HEADER: sign(secret, now, body, previous=previous_secrets),
        EVENT_ID_HEADER: event_id,
        EVENT_TYPE_HEADER: event_type,
    }
    try:
        host = check_destination(
            url, allow_http=client.allow_http, allow_private=client.allow_private
        )
    except InvalidWebhookUrl as exc:
        result = DeliveryResult(
            delivered=False, status=None, reason=f"destination refused: {exc}", retryable=False
        )
        host = None
    else:
        result = client.post(url, body=body, headers=headers)
    # The host, not the URL: customers sometimes put tokens in query strings.
    log.log(
        logging.INFO if result.delivered else logging.WARNING,
        "webhook delivered" if result.delivered else "webhook not delivered",
        extra={
            "event_id": event_id,
            "event_type": event_type,
            "host": host,
            "status": result.status,
            "reason": result.reason,
            "duration_s": round(result.duration_s, 3),
        },
    )
    return result


def next_attempt_delay(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): capped full jitter."""
    return full_jitter(attempt, base=base_s, cap=cap_s, rand=rand)


def is_expired(since: float, now: float, max_age_s: float) -> bool:
    """Say whether an event whose retry clock started at ``since`` is past retrying.

    The clock starts when the event is written (or queued again by an
    operator), not at its first attempt: an event that waited behind others
    has used its time waiting, so a gone endpoint drains at the retry pace.
    """
    return now - since >= max_age_s


# --- signature internals -------------------------------------------------------


def _standard_key(secret: str) -> bytes | None:
    """The decoded key of a secret in the spec's form, else None (a legacy secret)."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES else None


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode("ascii") + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def _parse_signature(header: object) -> tuple[int, list[str]] | None:
    """(timestamp, v1 values) from a header, or None for anything malformed."""
    if not isinstance(header, str) or len(header) > _MAX_HEADER_CHARS:
        return None
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            return None
        if key == "t":
            if timestamp is not None or not _TIMESTAMP.fullmatch(value):
                return None  # two timestamps are ambiguous; refuse rather than pick
            timestamp = int(value)
        elif key == "v1":
            value = value.lower()
            if _HEX_DIGEST.fullmatch(value) and len(candidates) < _MAX_SIGNATURES:
                candidates.append(value)
        # Other schemes (a future v2) are ignored, so they can be added later.
    if timestamp is None or not candidates:
        return None
    return timestamp, candidates
