"""The webhook signature scheme, checked against a verifier written from the spec."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.outbox.webhooks import is_expired, new_secret, next_attempt_delay, sign, verify
from worker.resilience.backoff import full_jitter

SECRET = "whsec_test_secret"
BODY = b'{"id":"evt_1","type":"connection.recovered"}'
T = 1_760_000_000


def spec_verify(secret: str, header: str, body: bytes, now: int, tolerance: int = 300) -> bool:
    """An integrator's verifier, from docs/webhooks.md alone (never calls worker code)."""
    fields = [part.split("=", 1) for part in header.split(",")]
    timestamps = [value for key, value in fields if key == "t"]
    if len(timestamps) != 1 or abs(now - int(timestamps[0])) > tolerance:
        return False
    message = timestamps[0].encode() + b"." + body
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, value) for key, value in fields if key == "v1")


def test_header_shape_and_known_answer() -> None:
    header = sign(SECRET, T, BODY)
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={T},v1={expected}"


def test_round_trip_with_both_verifiers() -> None:
    header = sign(SECRET, T, BODY)
    assert verify(SECRET, header, BODY, now=T)
    assert spec_verify(SECRET, header, BODY, now=T)


def test_tampered_body_is_refused() -> None:
    header = sign(SECRET, T, BODY)
    assert not verify(SECRET, header, BODY + b" ", now=T)
    assert not verify(SECRET, header, BODY.replace(b"evt_1", b"evt_2"), now=T)


def test_wrong_secret_is_refused() -> None:
    header = sign(SECRET, T, BODY)
    assert not verify("whsec_other", header, BODY, now=T)
    assert not verify("", header, BODY, now=T)


def test_tampered_timestamp_is_refused() -> None:
    digest = sign(SECRET, T, BODY).split(",", 1)[1]
    assert not verify(SECRET, f"t={T + 1},{digest}", BODY, now=T)


@pytest.mark.parametrize(
    ("offset", "ok"),
    [(0, True), (300, True), (-300, True), (301, False), (-301, False), (86_400, False)],
)
def test_replay_window_both_directions(offset: int, ok: bool) -> None:
    # offset > 0: the signature is old (replay); < 0: it claims to come from the future.
    header = sign(SECRET, T, BODY)
    assert verify(SECRET, header, BODY, now=T + offset) is ok
    assert spec_verify(SECRET, header, BODY, now=T + offset) is ok


def test_tolerance_is_configurable() -> None:
    header = sign(SECRET, T, BODY)
    assert not verify(SECRET, header, BODY, now=T + 10, tolerance_s=5)
    assert verify(SECRET, header, BODY, now=T + 10, tolerance_s=10)


GOOD = sign(SECRET, T, BODY)
GOOD_V1 = GOOD.split(",", 1)[1]


@pytest.mark.parametrize(
    "header",
    [
        "",
        ",",
        "garbage",
        "t=",
        f"t={T}",
        GOOD_V1,
        f"t=abc,{GOOD_V1}",
        f"t=-{T},{GOOD_V1}",
        f"t={T}.5,{GOOD_V1}",
        f"t=1e9,{GOOD_V1}",
        f"t=\uff11\uff12,{GOOD_V1}",  # full-width digits: str.isdigit() would take them
        f"t={T},t={T},{GOOD_V1}",  # two timestamps are ambiguous
        f"t={T},v1=",
        f"t={T},v1=zz",
        f"t={T},v1={'0' * 64}",
        f"t={T},v1={GOOD_V1[3:-1]}",  # truncated digest
        f"t={T},v1=\u00e9{GOOD_V1[4:]}",  # non-ASCII must not reach compare_digest
        f"t={T},v0={GOOD_V1[3:]}",  # an unknown scheme is no signature
        f"t={T},{GOOD_V1},junk",
        f"t={'9' * 40},{GOOD_V1}",
        f"t={T},{GOOD_V1}" + ",x=y" * 2000,  # oversized
        "\x00\x01\x02",
    ],
)
def test_garbage_headers_are_refused_without_raising(header: str) -> None:
    assert verify(SECRET, header, BODY, now=T) is False


def test_non_string_header_is_refused() -> None:
    assert verify(SECRET, None, BODY, now=T) is False  # type: ignore[arg-type]
    assert verify(SECRET, b"t=1", BODY, now=T) is False  # type: ignore[arg-type]


def test_whitespace_and_upper_case_hex_are_tolerated() -> None:
    digest = GOOD_V1[3:]
    assert verify(SECRET, f"t={T}, v1={digest.upper()}", BODY, now=T)


def test_any_matching_v1_is_enough() -> None:
    wrong = "v1=" + "ab" * 32
    assert verify(SECRET, f"t={T},{wrong},{GOOD_V1}", BODY, now=T)
    assert verify(SECRET, f"t={T},{GOOD_V1},{wrong}", BODY, now=T)
    assert spec_verify(SECRET, f"t={T},{wrong},{GOOD_V1}", BODY, now=T)


def test_rotation_signs_with_every_secret() -> None:
    header = sign("whsec_new", T, BODY, previous=["whsec_old"])
    assert header.count("v1=") == 2
    for secret in ("whsec_new", "whsec_old"):
        assert verify(secret, header, BODY, now=T)
        assert spec_verify(secret, header, BODY, now=T)
    assert not verify("whsec_older", header, BODY, now=T)


@pytest.mark.parametrize(("secret", "timestamp"), [("", T), (SECRET, -1), (SECRET, True)])
def test_sign_refuses_bad_input(secret: str, timestamp: int) -> None:
    with pytest.raises(ValueError) as caught:
        sign(secret, timestamp, BODY)
    assert SECRET not in str(caught.value)


def test_new_secrets_are_prefixed_and_distinct() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and len(first) > 40
    assert first != second


@given(
    secret=st.text(min_size=1, max_size=64),
    body=st.binary(max_size=2048),
    timestamp=st.integers(min_value=0, max_value=10**11),
)
def test_property_verify_accepts_what_sign_makes(secret: str, body: bytes, timestamp: int) -> None:
    header = sign(secret, timestamp, body)
    assert verify(secret, header, body, now=timestamp)
    assert spec_verify(secret, header, body, now=timestamp)


@given(
    secret=st.text(min_size=1, max_size=64),
    body=st.binary(min_size=1, max_size=512),
    index=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
)
def test_property_any_changed_byte_is_refused(
    secret: str, body: bytes, index: int, flip: int
) -> None:
    header = sign(secret, T, body)
    changed = bytearray(body)
    changed[index % len(body)] ^= flip
    assert not verify(secret, header, bytes(changed), now=T)


# --- retry arithmetic -------------------------------------------------------------


def test_next_attempt_delay_is_capped_full_jitter() -> None:
    for attempt in range(40):
        for fraction in (0.0, 0.5, 0.999):

            def rand(value: float = fraction) -> float:
                return value

            delay = next_attempt_delay(attempt, base_s=30, cap_s=3600, rand=rand)
            assert 0 <= delay <= 3600
            assert delay == full_jitter(attempt, base=30, cap=3600, rand=rand)
    assert next_attempt_delay(2, base_s=30, cap_s=3600, rand=lambda: 1.0) == 120
    assert next_attempt_delay(10_000, base_s=30, cap_s=3600, rand=lambda: 1.0) == 3600


def test_is_expired_at_the_24_hour_boundary() -> None:
    day = 86_400
    assert not is_expired(T, T, day)
    assert not is_expired(T, T + day - 1, day)
    assert is_expired(T, T + day, day)
    assert is_expired(T, T + 10 * day, day)


def test_standard_signature_matches_the_spec_example() -> None:
    # The example of the Standard Webhooks specification's reference libraries.
    from worker.outbox.webhooks import sign_standard

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    value = sign_standard([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                          b'{"test": 2432232314}')  # fmt: skip
    assert value == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_legacy_secrets_key_with_their_bytes_and_spec_secrets_with_the_decoded_key() -> None:
    import base64

    from worker.outbox.webhooks import signing_key, standard_form

    fresh = new_secret()
    assert len(signing_key(fresh)) == 32
    assert standard_form(fresh) == fresh
    for legacy in ("whsec_old_secret_4f1a", "whsec_" + "A" * 43, "no-prefix", "whsec_QUJD"):
        assert signing_key(legacy) == legacy.encode()
        assert base64.b64decode(standard_form(legacy)[6:]) == legacy.encode()
