"""The unified API as docs/upstream-api.md specifies it: status and entity lists.

``handle_api`` turns one parsed request into a ``Response``; the HTTP layer
only sends it. Order of checks: token, route, scenarios, parameters, data.
A lie (``lies.py``) reads the data like an honest answer, then bends it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from harness.sandbox import hostile, lies
from harness.sandbox.clock import parse_instant
from harness.sandbox.config import ScenarioSpec
from harness.sandbox.connection import Connection, ListQuery
from harness.sandbox.responses import HTML, Response, error_response, json_response
from harness.sandbox.scenarios import Verdict
from harness.sandbox.state import Sandbox
from worker.entities import EntityType

STATUS_PATH = "/api/integrations/current"
LIST_PREFIX = "/api/eam/"
DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 100

_ENTITIES = {e.value: e for e in EntityType}
_GTEQ, _LT, _SORT = "filter[updatedAt:gteq]", "filter[updatedAt:lt]", "sort[updatedAt]"
_PROXY_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_MAINTENANCE = b"<html>maintenance</html>"
# Scenarios answered with the data, shaped: the list is read, then bent.
_SHAPING = frozenset({"truncated", "trickle", "bad_record", *lies.LIES})


@dataclass(frozen=True)
class ApiRequest:
    """The parts of an HTTP request the API looks at."""

    method: str
    path: str
    query: str
    host: str
    authorization: str | None


@dataclass(frozen=True)
class Handled:
    """The response plus what the stats need to know about the request."""

    response: Response
    token: str | None
    entity: str | None
    inside_retry_window: bool = False


class _Invalid(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def handle_api(sandbox: Sandbox, req: ApiRequest) -> Handled:
    """Answer one request under ``/api/``."""
    rid = sandbox.next_request_id()
    token = bearer_token(req.authorization)
    conn = sandbox.connection(token) if token is not None else None
    if conn is None:
        message = "Missing or invalid bearer token" if token is None else "Unknown token"
        return Handled(error_response(401, "AUTHENTICATION_FAILED", message, rid), token, None)
    entity: EntityType | None = None
    if req.path != STATUS_PATH:
        name = req.path[len(LIST_PREFIX) :] if req.path.startswith(LIST_PREFIX) else None
        if name is None or "/" in name:
            return Handled(error_response(404, "NOT_FOUND", "No such endpoint", rid), token, None)
        entity = _ENTITIES.get(name)
        if entity is None:
            msg = f"Entity type {name!r} is not supported"
            return Handled(error_response(404, "ENTITY_NOT_SUPPORTED", msg, rid), token, name)
    label = entity.value if entity is not None else None
    if req.method != "GET":
        msg = f"{req.method} is not allowed here"
        return Handled(error_response(405, "METHOD_NOT_ALLOWED", msg, rid), token, label)
    with conn.lock:
        latched = conn.faults.auth_latch is not None
        verdict = conn.faults.judge(entity, entity is not None)
        tripped = not latched and conn.faults.auth_latch is not None
    if tripped:
        conn.webhook(
            "reauthorization",
            "connection.reauthorization_required",
            {"reason": "credentials changed in source system"},
        )
    response = _answer(conn, req, entity, verdict, rid)
    response.latency_s += verdict.latency_s
    if entity is not None:
        response.latency_s += conn.spec.latency_ms / 1000.0  # a list page's own latency
    return Handled(response, token, label, verdict.inside_retry_window)


def _answer(
    conn: Connection, req: ApiRequest, entity: EntityType | None, verdict: Verdict, rid: str
) -> Response:
    spec = verdict.scenario
    name = spec.name if spec is not None else None
    if spec is None or name in _SHAPING:
        response = _data(conn, req, entity, rid, spec)
        if name == "truncated" and response.status == 200:
            response.body = response.body[: len(response.body) // 2]
        if name == "trickle" and spec is not None:
            response.trickle_bps = spec.bytes_per_second
        return response
    if name == "sync_status":
        return _status(conn, spec.sync_status)
    if name == "offline":
        if entity is None and spec.status_ok:
            return _status(conn, "error")
        return error_response(503, "CONNECTION_OFFLINE", "The source system is offline", rid)
    if name == "auth_fail_from_page":
        if entity is None and not spec.status_401:
            return _status(conn, "fail")
        msg = "The source system rejected the stored credentials"
        return error_response(401, "AUTHENTICATION_FAILED", msg, rid)
    if name == "rate_limit":
        retry = [("Retry-After", verdict.retry_after or "1")]
        return error_response(429, "RATE_LIMIT_EXCEEDED", "Too many requests", rid, retry)
    if name == "disconnect":
        return Response(0, disconnect=True, reset=spec.reset)
    if name == "html_502":
        return Response(502, _PROXY_502, HTML)
    if name == "not_json":
        return Response(200, _MAINTENANCE, HTML)
    if name == "no_data":
        return json_response(200, {"message": "Service is being updated", "meta": {}})
    label = entity.value if entity is not None else "this connection"
    errors: Mapping[str, tuple[int, str, str]] = {
        "forbidden": (403, "PERMISSION_DENIED", f"User lacks read access to {label}"),
        "not_supported": (404, "ENTITY_NOT_SUPPORTED", f"{label} is not supported"),
        "flaky": (500, "INTERNAL_ERROR", "The unified API failed"),
        "source_timeout": (504, "SOURCE_TIMEOUT", "The source system did not answer in time"),
    }
    status, code, message = errors[str(name)]
    return error_response(status, code, message, rid)


def _status(conn: Connection, sync_status: str | None = None) -> Response:
    spec = conn.spec
    data = {
        "id": spec.connection_id(),
        "company_name": spec.company_name,
        "provider": spec.provider,
        "sync_status": sync_status or spec.sync_status,
        "updated_at": conn.sync_updated_at,
        "sync_updated_at": conn.sync_updated_at,
    }
    return json_response(200, {"data": data})


def _data(
    conn: Connection,
    req: ApiRequest,
    entity: EntityType | None,
    rid: str,
    spec: ScenarioSpec | None,
) -> Response:
    if entity is None:
        return _status(conn)
    pairs = parse_qsl(req.query, keep_blank_values=True)
    try:
        query = parse_list_query(dict(pairs))
    except _Invalid as exc:
        return error_response(exc.status, "INVALID_REQUEST", str(exc), rid)
    name = spec.name if spec is not None else None
    only = lies.replica(conn.spec.seed, spec.share) if spec and name == "lagging_replica" else None
    page = conn.list_page(entity, query, only)
    records: list[Any] = page.records
    total = page.total
    if spec is not None and name == "bad_record" and records:
        # Corrupt a copy: the truth must stay intact.
        middle = len(records) // 2
        broken = dict(records[middle])
        if spec.variant == "missing_key":
            del broken["key"]
        else:
            broken["updatedAt"] = "not-a-timestamp"
        records = [*records[:middle], broken, *records[middle + 1 :]]
    if name == "empty":
        records, total = [], 0
    body = envelope(req, pairs, query, records, total)
    # After the envelope, so that meta still promises the page that was cut.
    if spec is not None and name == "cut_short" and query.page == 1:
        body["data"] = lies.cut(records, spec.keep, query.per_page)
    if name == "keyless":
        body["data"] = [lies.keyless(record) for record in records]
    odd = conn.spec.hostile
    if odd is not None:
        classes = tuple(odd.classes) if odd.classes else None
        return Response(200, hostile.render(body, conn.spec.seed, every=odd.every, classes=classes))
    return json_response(200, body)


def parse_list_query(params: Mapping[str, str]) -> ListQuery:
    """Validate ``page``, ``per_page``, the updatedAt filters and the sort."""
    page = _positive_int(params, "page", 1)
    per_page = min(_positive_int(params, "per_page", DEFAULT_PER_PAGE), MAX_PER_PAGE)
    bounds: list[int | None] = []
    for name in (_GTEQ, _LT):
        raw = params.get(name)
        try:
            bounds.append(None if raw is None else parse_instant(raw))
        except ValueError:
            raise _Invalid(400, f"{name} must be an ISO-8601 instant, got {raw!r}") from None
    sort = params.get(_SORT, "0").strip()
    if sort not in ("0", "1"):
        raise _Invalid(400, f"{_SORT} must be 0 or 1, got {sort!r}")
    return ListQuery(page, per_page, bounds[0], bounds[1], sort == "1")


def _positive_int(params: Mapping[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise _Invalid(422, f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise _Invalid(422, f"{name} must be at least 1, got {value}")
    return value


def envelope(
    req: ApiRequest,
    pairs: list[tuple[str, str]],
    query: ListQuery,
    records: list[Any],
    total: int,
) -> dict[str, Any]:
    """The contract's ``data``/``links``/``meta`` body with absolute links."""
    last = max(1, -(-total // query.per_page))
    current = query.page
    kept = [(k, v) for k, v in pairs if k not in ("page", "per_page")]

    def link(number: int) -> str:
        params = [("page", str(number)), ("per_page", str(query.per_page)), *kept]
        return f"http://{req.host}{req.path}?{urlencode(params, safe='[]:')}"

    first_index = (current - 1) * query.per_page + 1
    return {
        "data": records,
        "links": {
            "first": link(1),
            "last": link(last),
            "prev": link(current - 1) if current > 1 else None,
            "next": link(current + 1) if current < last else None,
        },
        "meta": {
            "current_page": current,
            "last_page": last,
            "per_page": query.per_page,
            "total": total,
            "from": first_index if records else None,
            "to": first_index + len(records) - 1 if records else None,
        },
    }


__all__ = ["ApiRequest", "Handled", "bearer_token", "envelope", "handle_api"]
