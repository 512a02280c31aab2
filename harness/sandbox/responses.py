"""The answer the HTTP layer sends, and builders for JSON and error answers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# The contract's error codes and the ``type`` each one carries.
ERROR_TYPES = {
    "INVALID_REQUEST": "invalid_request",
    "AUTHENTICATION_FAILED": "authentication",
    "PERMISSION_DENIED": "permission",
    "ENTITY_NOT_SUPPORTED": "not_supported",
    "RATE_LIMIT_EXCEEDED": "rate_limit",
    "INTERNAL_ERROR": "internal",
    "CONNECTION_OFFLINE": "connection",
    "SOURCE_TIMEOUT": "timeout",
    "NOT_FOUND": "not_found",
    "METHOD_NOT_ALLOWED": "invalid_request",
}

JSON = "application/json"
HTML = "text/html; charset=utf-8"


@dataclass
class Response:
    """What to send: status, body, headers, and how (latency, trickle, disconnect)."""

    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)
    latency_s: float = 0.0
    trickle_bps: float | None = None
    disconnect: bool = False
    reset: bool = False


def dump(obj: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(status: int, obj: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    """A JSON answer."""
    return Response(status, dump(obj), JSON, list(headers or []))


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    """An error answer in the contract's shape."""
    body = {
        "error": {
            "code": code,
            "type": ERROR_TYPES.get(code, "error"),
            "message": message,
            "request_id": request_id,
        }
    }
    return json_response(status, body, [("X-Request-Id", request_id), *(headers or [])])
