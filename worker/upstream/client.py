"""The HTTP client for the unified API (docs/upstream-api.md), and its only user of httpx.

Every response and every transport exception is mapped here, at the edge, to
the project's own UpstreamError tree: the rest of the worker never sees httpx.
Bodies are read with a cap on their decoded size and a deadline over the whole
request (connect, TLS, headers and body; see ``transport``), so neither a 1 GB
answer, a gzip bomb, nor a server that trickles one byte a second can hold a
worker. Error and status bodies are read to a small cap and parsed with
bounded depth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from worker.errors import (
    AuthFailed,
    BadRequest,
    BadResponse,
    Unavailable,
    UpstreamError,
    error_for_status,
)
from worker.settings import Settings
from worker.upstream.http_edge import (
    ACCEPT_ENCODING,
    BodyTooLarge,
    Decoder,
    UndecodableBody,
    loads_bounded,
)
from worker.upstream.pagebody import BodyError, parse_list_body
from worker.upstream.retry_after import parse_retry_after
from worker.upstream.transport import DeadlineExceeded, DeadlineTransport, environment_proxies

MAX_RETRY_AFTER_S = 3600.0  # clamp: a wild Retry-After must not park a connection for days
STATUS_PATH = "/api/integrations/current"
SMALL_BODY_BYTES = 64 * 1024  # error and status answers: a message, not a payload
MAX_CLOCK_SKEW = timedelta(days=1)  # a Date header further off than this is not a clock

_log = logging.getLogger("entity_sync.upstream")


class Meta(BaseModel):
    """The ``meta`` block of a list page; only what paging needs is required."""

    model_config = ConfigDict(extra="allow")

    current_page: int | None = None
    last_page: int | None = None
    per_page: int | None = None
    total: int | None = None


class IntegrationStatus(BaseModel):
    """The ``data`` of GET /api/integrations/current."""

    model_config = ConfigDict(extra="allow")

    id: str | int | None = None
    company_name: str | None = None
    provider: str | None = None
    sync_status: str


class StatusEnvelope(BaseModel):
    """The status endpoint's body."""

    model_config = ConfigDict(extra="allow")

    data: IntegrationStatus


@dataclass(frozen=True)
class PageQuery:
    """One list request: page number, size and the updatedAt window."""

    page: int = 1
    per_page: int = 100
    since: str | None = None  # filter[updatedAt:gteq]
    before: str | None = None  # filter[updatedAt:lt]

    def params(self) -> dict[str, str | int]:
        """Query parameters as the contract spells them (ascending updatedAt)."""
        params: dict[str, str | int] = {
            "page": self.page,
            "per_page": self.per_page,
            "sort[updatedAt]": 0,
        }
        if self.since is not None:
            params["filter[updatedAt:gteq]"] = self.since
        if self.before is not None:
            params["filter[updatedAt:lt]"] = self.before
        return params

    def query_string(self) -> str:
        """``params()`` percent-encoded as httpx encodes ``params``."""
        return urlencode(self.params())


@dataclass(frozen=True)
class Page:
    """One list page as received: records (``pagebody.BodyRecord``), meta, the server's clock."""

    records: list[Any]
    meta: Meta
    server_time: datetime  # from the Date header; our clock when it is missing


class UpstreamClient:
    """A pooled client for one worker process; call ``close()`` when done."""

    def __init__(self, *, settings: Settings) -> None:
        self._max_bytes = settings.max_response_bytes
        self._deadline_s = settings.request_deadline

        def transport(proxy: httpx.Proxy | None = None) -> DeadlineTransport:
            return DeadlineTransport(
                deadline_s=self._deadline_s,
                max_connections=settings.pool_size,
                proxy=proxy,
            )

        self._http = httpx.Client(
            transport=transport(),
            mounts=_environment_proxies(transport),
            timeout=httpx.Timeout(
                connect=settings.connect_timeout,
                read=settings.read_timeout,
                write=settings.read_timeout,
                pool=settings.connect_timeout,
            ),
            follow_redirects=False,
            headers={
                "Accept": "application/json",
                "Accept-Encoding": ACCEPT_ENCODING,
                "User-Agent": "entity-sync/0.1",
            },
        )

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def status(self, base_url: str, token: str) -> IntegrationStatus:
        """GET /api/integrations/current."""
        body, _ = self._get(base_url + STATUS_PATH, token, limit=SMALL_BODY_BYTES)
        try:
            return StatusEnvelope.model_validate_json(body).data
        except ValidationError as exc:
            raise BadResponse(f"status answer breaks the contract: {_first_error(exc)}") from None

    def list_page(self, base_url: str, token: str, entity_type: str, query: PageQuery) -> Page:
        """GET /api/eam/{entity_type} for one page."""
        # The query goes in the URL string: httpx merging ``params`` into a parsed
        # URL parses it a second time (some 30 us of CPU a request).
        url = f"{base_url}/api/eam/{entity_type}?{query.query_string()}"
        body, headers = self._get(url, token, limit=self._max_bytes)
        # Record by record (worker.upstream.pagebody): one bad record must not sink the page.
        try:
            parsed = parse_list_body(body)
            meta = Meta() if parsed.meta is None else Meta.model_validate(parsed.meta)
        except BodyError as exc:
            raise BadResponse(f"list page breaks the contract: {exc}") from None
        except ValidationError as exc:
            raise BadResponse(f"list page breaks the contract: meta.{_first_error(exc)}") from None
        return Page(
            records=list(parsed.records),
            meta=meta,
            server_time=_server_time(headers.get("date")),
        )

    def _get(self, url: str, token: str, *, limit: int) -> tuple[bytes, httpx.Headers]:
        authorization = _authorization(token)
        try:
            with self._http.stream(
                "GET", url, headers={"Authorization": authorization}
            ) as response:
                if response.status_code != 200:
                    # Only the message matters: read a little, never refuse for size.
                    body = self._read_capped(response, SMALL_BODY_BYTES, cut=True)
                    raise _error_from_response(response, body)
                return self._read_capped(response, limit), response.headers
        except DeadlineExceeded as exc:
            raise Unavailable(
                f"answer not complete within the {self._deadline_s:g}s deadline"
            ) from exc
        except httpx.TimeoutException as exc:
            raise Unavailable(f"timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            # Refused, reset, DNS, TLS and protocol errors: the far side is not
            # answering properly right now.
            raise Unavailable(f"transport error: {type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"HTTP client error: {type(exc).__name__}: {exc}") from exc
        except httpx.InvalidURL as exc:
            # The connection's upstream URL cannot be requested at all: its set-up.
            raise BadRequest(f"the upstream URL is not usable: {exc}") from None

    def _read_capped(self, response: httpx.Response, limit: int, *, cut: bool = False) -> bytes:
        """The decoded body, at most ``limit`` bytes on the wire and decoded; ``cut``
        keeps the first ``limit`` bytes of a longer one instead of refusing it."""
        declared = response.headers.get("content-length")
        if not cut and declared and declared.isdigit() and int(declared) > limit:
            raise BadResponse(
                f"answer of {declared} bytes exceeds the {limit}-byte cap",
                status=response.status_code,
            )
        try:
            decoder = Decoder(response.headers.get("content-encoding"), limit)
        except UndecodableBody as exc:
            raise BadResponse(str(exc), status=response.status_code) from None
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_raw():  # wire bytes: decoded here, under the cap
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"{size} bytes on the wire")
                chunks.append(decoder.feed(chunk))
            chunks.append(decoder.finish())
        except BodyTooLarge as exc:
            if cut:
                return b"".join(chunks)[:limit]
            raise BadResponse(
                f"answer exceeds the {limit}-byte cap: {exc}", status=response.status_code
            ) from None
        except UndecodableBody as exc:
            if cut:
                return b"".join(chunks)
            raise BadResponse(str(exc), status=response.status_code) from None
        return b"".join(chunks)


def _environment_proxies(
    transport: Callable[[httpx.Proxy], httpx.BaseTransport],
) -> dict[str, httpx.BaseTransport | None]:
    """Transports for the proxies the environment names (HTTP_PROXY, NO_PROXY, ...).

    httpx reads these itself only when it builds its own transport; ours keeps
    that behaviour, every proxied request under the same deadline. A SOCKS
    proxy is not supported here and is ignored with a warning.
    """
    mounts: dict[str, httpx.BaseTransport | None] = {}
    for pattern, url in environment_proxies().items():
        if url is None:
            mounts[pattern] = None  # NO_PROXY: the direct transport
        elif url.startswith(("http://", "https://")):
            mounts[pattern] = transport(httpx.Proxy(url))
        else:
            _log.warning("ignoring the %s proxy for %s: not supported", url.split(":")[0], pattern)
    return mounts


def _authorization(token: str) -> str:
    """The Authorization header, or AuthFailed naming the problem but never the token.

    An HTTP header carries visible ASCII only. A stored token with a BOM, a
    zero-width space or a line break cannot be sent; letting httpx try raises a
    UnicodeEncodeError whose text holds the whole header, token included.
    """
    bad = sorted({f"U+{ord(c):04X}" for c in token if not "\x21" <= c <= "\x7e"})
    if bad or not token:
        held = ", ".join(bad[:5]) if bad else "nothing"
        raise AuthFailed(
            f"the stored token cannot be sent in an HTTP header (it holds {held}): "
            "replace it with `entity-sync connections set-token`"
        )
    return f"Bearer {token}"


def _error_from_response(response: httpx.Response, body: bytes) -> UpstreamError:
    code, message, request_id = _error_body(body)
    retry_after = parse_retry_after(
        response.headers.get("retry-after"), now=datetime.now(UTC), max_s=MAX_RETRY_AFTER_S
    )
    detail = message or f"HTTP {response.status_code} without an error body"
    return error_for_status(response.status_code, code, detail, retry_after, request_id)


def _error_body(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(code, message, request_id) from the contract's error body, if it is one."""
    try:
        parsed = loads_bounded(body)
    except ValueError:  # HTML from a proxy, empty, truncated, too deep or odd numbers
        return None, None, None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return None, None, None

    def text(name: str) -> str | None:
        value = error.get(name)
        return str(value)[:500] if value is not None else None

    return text("code"), text("message"), text("request_id")


def _server_time(date_header: str | None) -> datetime:
    """The upstream's clock from its Date header; ours when it is missing or absurd."""
    now = datetime.now(UTC)
    if not date_header:
        return now
    try:
        parsed = parsedate_to_datetime(date_header).astimezone(UTC)
    except (TypeError, ValueError, OverflowError, IndexError):
        parsed = None  # unparseable, or a year at the calendar's edge
    if parsed is None or abs(parsed - now) > MAX_CLOCK_SKEW:
        _log.warning(
            "ignoring the upstream's Date header %r: using our own clock", date_header[:64]
        )
        return now
    return parsed


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    return f"{where}: {error['msg']}"
