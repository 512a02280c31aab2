"""Verifying and parsing the unified API's webhooks (worker/inbound/actions.py)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from worker.inbound.actions import BadEvent, parse_event, sign, verify_signature

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
