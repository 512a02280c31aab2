"""The HTTP client for the unified API (docs/upstream-api.md), and its only user of httpx.

Every response and every transport exception is mapped here, at the edge, to
the project's own UpstreamError tree: the rest of the worker never sees httpx.
Bodies are read with a size cap and a whole-request deadline, so neither a
1 GB answer nor a server that trickles one byte a second can hold a worker.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from worker.backoff import parse_retry_after
from worker.classify import error_for_status
from worker.errors import BadResponse, Unavailable, UpstreamError
from worker.pagebody import BodyError, parse_list_body
from worker.settings import Settings

MAX_RETRY_AFTER_S = 3600.0  # clamp: a wild Retry-After must not park a connection for days
STATUS_PATH = "/api/integrations/current"


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
        self._http = httpx.Client(
            timeout=httpx.Timeout(
                connect=settings.connect_timeout,
                read=settings.read_timeout,
                write=settings.read_timeout,
                pool=settings.connect_timeout,
            ),
            limits=httpx.Limits(
                max_connections=settings.pool_size, max_keepalive_connections=settings.pool_size
            ),
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "entity-sync/0.1"},
        )

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def status(self, base_url: str, token: str) -> IntegrationStatus:
        """GET /api/integrations/current."""
        body, _ = self._get(base_url + STATUS_PATH, token, params={})
        try:
            return StatusEnvelope.model_validate_json(body).data
        except ValidationError as exc:
            raise BadResponse(f"status answer breaks the contract: {_first_error(exc)}") from None

    def list_page(self, base_url: str, token: str, entity_type: str, query: PageQuery) -> Page:
        """GET /api/eam/{entity_type} for one page."""
        url = f"{base_url}/api/eam/{entity_type}"
        body, headers = self._get(url, token, params=query.params())
        # Record by record (worker.pagebody): one bad record must not sink the page.
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

    def _get(
        self, url: str, token: str, *, params: dict[str, str | int]
    ) -> tuple[bytes, httpx.Headers]:
        deadline = time.monotonic() + self._deadline_s
        try:
            with self._http.stream(
                "GET", url, params=params, headers={"Authorization": f"Bearer {token}"}
            ) as response:
                body = self._read_capped(response, deadline)
                if response.status_code != 200:
                    raise _error_from_response(response, body)
                return body, response.headers
        except httpx.TimeoutException as exc:
            raise Unavailable(f"timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            # Refused, reset, DNS, TLS and protocol errors: the far side is not
            # answering properly right now.
            raise Unavailable(f"transport error: {type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"HTTP client error: {type(exc).__name__}: {exc}") from exc

    def _read_capped(self, response: httpx.Response, deadline: float) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self._max_bytes:
            raise BadResponse(
                f"answer of {declared} bytes exceeds the {self._max_bytes}-byte cap",
                status=response.status_code,
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > self._max_bytes:
                raise BadResponse(
                    f"answer exceeds the {self._max_bytes}-byte cap", status=response.status_code
                )
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"answer not complete within the {self._deadline_s:g}s deadline",
                    status=response.status_code,
                )
            chunks.append(chunk)
        return _decoded(response, b"".join(chunks))


def _decoded(response: httpx.Response, raw: bytes) -> bytes:
    # iter_raw skips content decoding so the cap counts wire bytes; decode now.
    encoding = response.headers.get("content-encoding", "identity").lower()
    if encoding in ("", "identity"):
        return raw
    try:
        decoded = httpx.Response(200, headers={"content-encoding": encoding}, content=raw).read()
    except httpx.DecodingError as exc:
        raise BadResponse(f"cannot decode {encoding} body: {exc}") from None
    return decoded


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
        parsed = json.loads(body)
    except ValueError:  # HTML from a proxy, empty or truncated bodies
        return None, None, None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return None, None, None

    def text(name: str) -> str | None:
        value = error.get(name)
        return str(value)[:500] if value is not None else None

    return text("code"), text("message"), text("request_id")


def _server_time(date_header: str | None) -> datetime:
    if date_header:
        try:
            parsed = parsedate_to_datetime(date_header)
        except (TypeError, ValueError):
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
    return datetime.now(UTC)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    return f"{where}: {error['msg']}"
