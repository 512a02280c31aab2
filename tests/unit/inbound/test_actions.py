"""Verifying and parsing the unified API's webhooks (worker/inbound/actions.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from worker.inbound.actions import (
    BadEvent,
    UnparsableBody,
    parse_event,
    sign,
    verify_signature,
)
from worker.inbound.checks import MAX_DEPTH, freshness_problem
from worker.timeutil import canonical

BODY = (
    b'{"id": "evt_1", "type": "sync.completed", "created_at": "2026-11-30T09:00:00+01:00", '
    b'"connection_id": 9000000000042, "data": {"entity_types": ["assets"]}, "extra": 1}'
)


def _header(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def test_any_listed_secret_verifies_and_nothing_else_does() -> None:
    new, old = b"new-secret-0123456789", b"old-secret-0123456789"
    assert verify_signature([new, old], _header(old, BODY), BODY)
    assert verify_signature([new], _header(new, BODY).upper().replace("SHA256", "sha256"), BODY)
    assert sign(new, BODY) == _header(new, BODY)
    for header in (None, "", "sha256=", _header(b"other", BODY), "sha1=" + "0" * 40, "sha256=é"):
        assert not verify_signature([new, old], header, BODY)
    assert not verify_signature([new], _header(new, BODY), BODY + b" ")
    assert not verify_signature([], _header(new, BODY), BODY)


def test_events_are_parsed_to_canonical_form_and_refused_when_malformed() -> None:
    event = parse_event(BODY)
    assert event.created_at == "2026-11-30T08:00:00.000000Z"
    assert event.connection_id == "9000000000042"  # a number is taken as its digits
    assert event.data == {"entity_types": ["assets"]}
    for bad in (b"[]", b'{"id": "x"}', BODY.replace(b"2026-11-30T09", b"yesterday"), b"{"):
        with pytest.raises(BadEvent):
            parse_event(bad)


def _event(**fields: object) -> bytes:
    base: dict[str, object] = {
        "id": "evt_1",
        "type": "sync.completed",
        "created_at": "2026-11-30T08:00:00Z",
        "connection_id": "09000000000042",
        "data": {"entity_types": ["assets"]},
    }
    return json.dumps(base | fields).encode()


def test_a_body_nested_beyond_the_parser_is_unparsable_not_a_crash() -> None:
    """Issue 19, finding 2: 20,000 levels raised RecursionError past the receiver."""
    deep = b"[" * 20_000 + b"]" * 20_000
    with pytest.raises(UnparsableBody, match="nested too deep"):
        parse_event(_event(data={"x": "PLACEHOLDER"}).replace(b'"PLACEHOLDER"', deep))
    for junk in (b"not json", b"\xff\xfe{", b"{"):
        with pytest.raises(UnparsableBody):
            parse_event(junk)
    # JSON the parser takes, deeper than any event of the contract: an event refused.
    nested: object = "leaf"
    for _ in range(MAX_DEPTH + 5):
        nested = {"n": nested}
    with pytest.raises(BadEvent, match="nested deeper than") as refused:
        parse_event(_event(data={"x": nested}))
    assert not isinstance(refused.value, UnparsableBody)


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "evt_\u0000x"},
        {"connection_id": "0900\u00000042"},
        {"type": "sync.completed\u0000"},
        {"data": {"reason": "a\u0000b"}},
        {"data": {"entity_types": ["assets", "x\u0000"]}},
        {"data": {"k\u0000ey": 1}},
        {"extra": {"deep": [{"deeper": "\u0000"}]}},
        {"data": {"reason": "\ud800 lone"}},
    ],
)
def test_a_nul_or_a_lone_surrogate_in_any_string_is_refused(fields: dict[str, object]) -> None:
    """Issue 19, finding 4: PostgreSQL refused the NUL at every retry (503 for ever)."""
    with pytest.raises(BadEvent, match="NUL|lone surrogate") as refused:
        parse_event(_event(**fields))
    assert "\u0000" not in str(refused.value)
    # The escaped text "\\u0000" (a backslash, then letters) is text, and kept.
    assert parse_event(_event(data={"reason": "a\\u0000b"})).data["reason"] == "a\\u0000b"


def test_freshness_is_bounded_in_the_past_and_in_the_future() -> None:
    now = datetime.now(UTC)

    def problem(offset: timedelta) -> str | None:
        return freshness_problem(canonical(now + offset), now=now, max_age_s=3600, skew_s=300)

    assert problem(timedelta(0)) is None
    assert problem(timedelta(minutes=-59)) is None
    assert problem(timedelta(minutes=4)) is None
    assert "older than the 3600 s" in (problem(timedelta(minutes=-61)) or "")
    assert "ahead of this clock" in (problem(timedelta(minutes=6)) or "")
    assert "ahead of this clock" in (problem(timedelta(days=365 * 70)) or "")
