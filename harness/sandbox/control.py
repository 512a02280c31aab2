"""The control API under ``/_sandbox/``: reconfigure, mutate, inspect. No auth.

The sandbox is a test tool bound to 127.0.0.1 by default; the routes are
listed in ``README.md``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, TypeAdapter, ValidationError

from harness.sandbox.config import (
    ConnectionSpec,
    MutationBatch,
    ScenarioSpec,
    parse_config,
    validate_token,
)
from harness.sandbox.responses import Response, error_response, json_response
from harness.sandbox.state import Sandbox, UnknownToken
from harness.sandbox.webhooks import WebhookTarget
from worker.entities import EntityType

PREFIX = "/_sandbox/"
_SCENARIOS = TypeAdapter(list[ScenarioSpec])


class _BadBody(ValueError):
    """The request body is not what the route expects."""


class _RotateBody(BaseModel):
    new_token: str


class _TargetBody(BaseModel):
    url: str
    secret: str


class _EmitBody(BaseModel):
    type: str
    data: dict[str, Any] = {}
    id: str | None = None
    created_at: str | None = None


def handle_control(sandbox: Sandbox, method: str, path: str, body: bytes) -> Response:
    """Answer one request under ``/_sandbox/``."""
    rid = sandbox.next_request_id()
    parts = [unquote(p) for p in path[len(PREFIX) :].strip("/").split("/")]
    try:
        return _route(sandbox, method, parts, body)
    except UnknownToken as exc:
        return error_response(404, "NOT_FOUND", f"no connection with token {exc}", rid)
    except (_BadBody, ValidationError, ValueError) as exc:
        return error_response(400, "INVALID_REQUEST", str(exc), rid)


def _route(sandbox: Sandbox, method: str, parts: list[str], body: bytes) -> Response:
    match (method, parts):
        case ("GET", ["health"]):
            return json_response(200, {"status": "ok"})
        case ("GET", ["config"]):
            return json_response(200, sandbox.config().model_dump(mode="json"))
        case ("PUT", ["config"]):
            sandbox.load(parse_config(_json(body)))
            return json_response(200, {"status": "loaded"})
        case ("PUT", ["webhooks"]):
            target = _TargetBody.model_validate(_json(body))
            sandbox.set_webhook_target(WebhookTarget(url=target.url, secret=target.secret))
            return json_response(200, {"status": "sending", "url": target.url})
        case ("GET", ["webhooks"]):
            sent = sandbox.webhooks.sent() if sandbox.webhooks else []
            return json_response(200, {"sent": sent})
        case ("POST", ["connections", token, "webhooks"]):
            emit = _EmitBody.model_validate(_json(body))
            event, status = sandbox.emit_now(
                token, emit.type, emit.data, event_id=emit.id, created_at=emit.created_at
            )
            return json_response(200, {"event": event, "status": status})
        case ("POST", ["connections", token, "revoke"]):
            return json_response(200, {"status": "revoked", "event": sandbox.revoke(token)})
        case ("GET", ["stats"]):
            return json_response(200, sandbox.stats.snapshot())
        case ("POST", ["stats", "reset"]):
            sandbox.stats.reset()
            return json_response(200, {"status": "reset"})
        case ("PUT", ["connections", token]):
            spec = ConnectionSpec.model_validate(_json(body))
            sandbox.put_connection(validate_token(token), spec)
            return json_response(200, {"status": "stored", "token": token})
        case ("GET", ["connections", token]):
            return json_response(200, _describe(sandbox, token))
        case ("POST", ["connections", token, "mutate"]):
            batch = MutationBatch.model_validate(_json(body) if body.strip() else {})
            summary = sandbox.require(token).mutate(batch)
            return json_response(200, {"changes": summary})
        case ("POST", ["connections", token, "scenarios"]):
            raw = _json(body)
            if isinstance(raw, dict):
                raw = raw.get("scenarios", [])
            sandbox.set_scenarios(token, _SCENARIOS.validate_python(raw))
            return json_response(200, {"status": "scenarios restarted"})
        case ("POST", ["connections", token, "rotate"]):
            new_token = validate_token(_RotateBody.model_validate(_json(body)).new_token)
            sandbox.rotate(token, new_token)
            return json_response(200, {"status": "rotated", "token": new_token})
        case ("GET", ["connections", token, "records", entity]):
            try:
                kind = EntityType(entity)
            except ValueError:
                raise _BadBody(f"unknown entity type {entity!r}") from None
            return json_response(200, {"data": sandbox.require(token).truth(kind)})
    return error_response(404, "NOT_FOUND", "no such control route", sandbox.next_request_id())


def _describe(sandbox: Sandbox, token: str) -> dict[str, Any]:
    conn = sandbox.require(token)
    with conn.lock:
        return {
            "token": token,
            "spec": conn.spec.model_dump(mode="json"),
            "auth_failed": conn.faults.auth_latch is not None,
            "list_requests": conn.faults.list_requests,
        }


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as exc:
        raise _BadBody(f"body is not JSON: {exc}") from None
