"""Each record is checked on its own: the good are stored, the bad quarantined."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.secrets import SecretBox, generate_key
from worker.store import QuarantinedRecord, RecordRow
from worker.sync.records import split_records
from worker.timeutil import NULL_DATE, after, canonical_instant
from worker.upstream.pagebody import MAX_DEPTH, BodyError, parse_list_body


def test_bad_records_are_set_aside_with_their_reason() -> None:
    items = [
        {"key": "A-1", "updatedAt": "2026-11-20T08:00:00Z", "extra": {"kept": True}},
        {"updatedAt": "2026-11-20T08:00:00Z"},
        {"key": 7, "updatedAt": "2026-11-20T08:00:00Z"},
        {"key": "A-3", "updatedAt": "yesterday"},
        {"key": "A-4", "updatedAt": "2026-11-20T08:00:00Z", "deletedAt": "soon"},
        "not an object",
        {"key": "A-5", "updatedAt": "2026-11-20T10:00:00+02:00", "deletedAt": "2026-11-21T00:00Z"},
    ]
    good, bad = split_records(items)
    assert [r.key for r in good] == ["A-1", "A-5"]
    assert json.loads(good[0].data_json)["extra"] == {"kept": True}
    assert good[1].updated_at == "2026-11-20T08:00:00.000000Z"
    assert good[1].deleted_at == "2026-11-21T00:00:00.000000Z"
    assert [q.reason for q in bad] == [
        "record has no string key",
        "record has no string key",
        "record has no valid updatedAt",
        "record has an invalid deletedAt",
        "record is str, not an object",
    ]
    assert bad[2].key == "A-3"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(st.lists(json_values, max_size=20))
def test_any_json_is_split_without_raising(items: list[object]) -> None:
    good, bad = split_records(items)
    assert len(good) + len(bad) == len(items)


def test_secret_box_rotation() -> None:
    old, new = generate_key(), generate_key()
    ciphertext = SecretBox(old).encrypt("tok")
    both = SecretBox(f"{new},{old}")
    rotated = both.rotate(ciphertext)
    assert SecretBox(new).decrypt(rotated) == "tok"
    assert "tok" not in rotated


# -- odd records: each class of docs/records.md, decoded from a page body --------

GOOD = b'{"key":"OK-1","updatedAt":"2026-11-20T08:00:00Z","name":"fine"}'


def _page(*records: bytes) -> list[object]:
    body = b'{"links":{},"data":[' + b",".join(records) + b'],"meta":{"total":9}}'
    return list(parse_list_body(body).records)


def _one(record: bytes) -> RecordRow | QuarantinedRecord:
    """The record checked in a page beside a good one, which must always be stored."""
    good, bad = split_records(_page(GOOD, record, GOOD.replace(b"OK-1", b"OK-2")))
    assert {"OK-1", "OK-2"} <= {r.key for r in good}, "a bad record sank its neighbours"
    [checked] = [r for r in [*good, *bad] if not (isinstance(r, RecordRow) and r.key[:3] == "OK-")]
    return checked


def _stored(record: bytes) -> RecordRow:
    checked = _one(record)
    assert isinstance(checked, RecordRow), checked
    return checked


def _quarantined(record: bytes) -> QuarantinedRecord:
    checked = _one(record)
    assert isinstance(checked, QuarantinedRecord), checked
    return checked


def test_nul_text_is_stored_escaped_with_the_exact_text_beside_it() -> None:
    row = _stored(b'{"key":"N-1","updatedAt":"2026-11-20T08:00:00Z","name":"Pump\\u00007"}')
    assert json.loads(row.data_json)["name"] == "Pump\ufffd7"
    assert row.raw == '{"key":"N-1","updatedAt":"2026-11-20T08:00:00Z","name":"Pump\\u00007"}'


def test_a_literal_nul_byte_is_written_as_an_escape_in_the_raw_text() -> None:
    row = _stored(b'{"key":"N-2","updatedAt":"2026-11-20T08:00:00Z","name":"a\x00b"}')
    assert json.loads(row.data_json)["name"] == "a\ufffdb"
    assert row.raw is not None and "\x00" not in row.raw and '"a\\x00b"' in row.raw


def test_nan_and_infinity_are_null_in_data_and_exact_in_raw() -> None:
    row = _stored(b'{"key":"F-1","updatedAt":"2026-11-20T08:00:00Z","a":NaN,"b":-Infinity}')
    assert json.loads(row.data_json) | {} == {
        "key": "F-1",
        "updatedAt": "2026-11-20T08:00:00Z",
        "a": None,
        "b": None,
    }
    assert row.raw is not None and '"a":NaN,"b":-Infinity' in row.raw


def test_numbers_a_double_cannot_hold_are_kept_digit_for_digit() -> None:
    digits = "7" * 5000
    record = (
        b'{"key":"B-1","updatedAt":"2026-11-20T08:00:00Z","huge":'
        + digits.encode()
        + b',"big":1e400,"tiny":1e-400,"precise":0.10000000000000000555,'
        + b'"wide":123456789012345678901}'
    )
    row = _stored(record)
    assert row.raw is None, "data holds these exactly"
    assert f'"huge":{digits},' in row.data_json
    assert '"big":1e400,"tiny":1e-400,"precise":0.10000000000000000555' in row.data_json
    assert '"wide":123456789012345678901' in row.data_json


def test_numbers_past_postgresql_numeric_are_null_with_the_exact_text() -> None:
    row = _stored(b'{"key":"B-2","updatedAt":"2026-11-20T08:00:00Z","n":1e200000}')
    assert json.loads(row.data_json)["n"] is None
    assert row.raw is not None and '"n":1e200000' in row.raw


def test_a_lone_surrogate_is_stored_as_a_replacement_character() -> None:
    row = _stored(b'{"key":"S-1","updatedAt":"2026-11-20T08:00:00Z","name":"x\\ud800y"}')
    assert json.loads(row.data_json)["name"] == "x\ufffdy"
    assert row.raw is not None and "\\ud800" in row.raw
    row.data_json.encode("utf-8")  # would raise for a surrogate


def test_a_surrogate_pair_is_ordinary_text() -> None:
    row = _stored(b'{"key":"S-2","updatedAt":"2026-11-20T08:00:00Z","name":"\\ud83d\\ude00"}')
    assert json.loads(row.data_json)["name"] == "\U0001f600" and row.raw is None


def test_invalid_utf8_is_quarantined_with_its_bytes_escaped() -> None:
    bad = _quarantined(b'{"key":"U-1","updatedAt":"2026-11-20T08:00:00Z","name":"M\xfcller"}')
    assert bad.key == "U-1" and "UTF-8" in bad.reason
    assert '"M\\xfcller"' in bad.raw_json
    bad.raw_json.encode("utf-8")


def test_invalid_utf8_outside_a_string_is_quarantined_too() -> None:
    bad = _quarantined(b'{"key":"U-2","updatedAt":"2026-11-20T08:00:00Z",\xff:1}')
    assert "UTF-8" in bad.reason and "\\xff" in bad.raw_json


def test_nesting_past_the_limit_is_quarantined_and_below_it_stored() -> None:
    shallow = b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1)
    row = _stored(b'{"key":"D-1","updatedAt":"2026-11-20T08:00:00Z","v":' + shallow + b"}")
    assert row.data_json.endswith(shallow.decode() + "}")
    for depth in (MAX_DEPTH + 1, 300, 5000, 100_000):
        deep = b"[" * depth + b"]" * depth
        bad = _quarantined(b'{"key":"D-2","updatedAt":"2026-11-20T08:00:00Z","v":' + deep + b"}")
        assert "nested" in bad.reason and bad.key in ("D-2", None), bad.reason


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[" * 1000
    row = _stored(b'{"key":"D-3","updatedAt":"2026-11-20T08:00:00Z","v":"' + text.encode() + b'"}')
    assert json.loads(row.data_json)["v"] == text


def test_a_record_of_megabytes_is_stored_whole() -> None:
    blob = "x" * 3_000_000
    row = _stored(
        b'{"key":"M-1","updatedAt":"2026-11-20T08:00:00Z","blob":"' + blob.encode() + b'"}'
    )
    assert json.loads(row.data_json)["blob"] == blob


def test_invalid_json_in_one_record_is_quarantined_with_its_text() -> None:
    bad = _quarantined(b'{"key":"J-1","updatedAt":"2026-11-20T08:00:00Z","x":tru, "s":"a,]}"}')
    assert bad.reason.startswith("not valid JSON") and bad.raw_json.endswith('"s":"a,]}"}')


@pytest.mark.parametrize(
    ("stamp", "stored"),
    [
        ("0001-01-01T00:00:00Z", NULL_DATE),
        ("0001-01-01T00:00:00+01:00", NULL_DATE),  # OverflowError out of check_record on main
        ("0001-01-01T00:00:00.000-05:00", NULL_DATE),
        ("0000-00-00T00:00:00Z", NULL_DATE),
        ("2026-11-20T09:30:00+01:30", "2026-11-20T08:00:00.000000Z"),
        ("2026-11-20T03:00:00-05:00", "2026-11-20T08:00:00.000000Z"),
        ("2026-11-20T08:00:00.123456789Z", "2026-11-20T08:00:00.123456Z"),
        ("0999-05-01T00:00:00Z", "0999-05-01T00:00:00.000000Z"),
        ("0042-05-01T00:00:00+00:00", "0042-05-01T00:00:00.000000Z"),
    ],
)
def test_every_instant_becomes_fixed_width_utc(stamp: str, stored: str) -> None:
    row = _stored(b'{"key":"T-1","updatedAt":"' + stamp.encode() + b'"}')
    assert row.updated_at == stored
    assert json.loads(row.data_json)["updatedAt"] == stamp, "data keeps the text as received"
    assert canonical_instant(stamp) == stored


def test_years_below_1000_sort_before_later_years_as_text() -> None:
    stamps = ["0099-01-01T00:00:00Z", "0999-12-31T23:59:59Z", "1000-01-01T00:00:00Z"]
    canon = [canonical_instant(s) for s in stamps]
    assert sorted(canon) == canon and {len(c) for c in canon} == {27}


@pytest.mark.parametrize(
    "stamp", ["9999-12-31T23:00:00-05:00", "2026-11-20T08:00:60Z", "2026-13-01T00:00:00Z", "x" * 99]
)
def test_impossible_instants_quarantine_with_a_reason(stamp: str) -> None:
    bad = _quarantined(b'{"key":"T-2","updatedAt":"' + stamp.encode() + b'"}')
    assert bad.reason == "record has no valid updatedAt" and bad.key == "T-2"
    with pytest.raises(ValueError):
        canonical_instant(stamp)


def test_a_null_date_sentinel_as_deleted_at_means_not_deleted() -> None:
    for stamp in ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00"):
        row = _stored(
            b'{"key":"T-3","updatedAt":"2026-11-20T08:00:00Z","deletedAt":"'
            + stamp.encode()
            + b'"}'
        )
        assert row.deleted_at is None


@pytest.mark.parametrize(
    "body",
    [
        b"<html>maintenance</html>",
        b'{"message":"no data here"}',
        b'{"data":{"key":"A"}}',
        b'{"data":[{"key":"A","updatedAt":"2026-11-20T08:00:00Z"},{"key":"B","upd',
        b'{"data":[{"key":"A","updatedAt":"2026-11-20T08:00:00Z"}',
        b'{"data":[]} trailing',
        b"",
        b"[1,2]",
    ],
)
def test_a_broken_envelope_fails_the_whole_page(body: bytes) -> None:
    with pytest.raises(BodyError):
        parse_list_body(body)


def test_the_envelope_is_read_in_any_order_with_a_bom_and_whitespace() -> None:
    body = (
        b'\xef\xbb\xbf \n{ "meta" : {"total": 2} ,\n "data" : [ ' + GOOD + b" , " + GOOD + b" ] }\n"
    )
    parsed = parse_list_body(body)
    assert parsed.meta == {"total": 2} and len(parsed.records) == 2


hostile_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(st.lists(hostile_json, max_size=10))
def test_any_decoded_value_is_stored_as_text_both_stores_hold_or_quarantined(
    items: list[object],
) -> None:
    good, bad = split_records(items)
    assert len(good) + len(bad) == len(items)
    for row in good:
        row.data_json.encode("utf-8")  # no lone surrogate
        decoded = json.loads(row.data_json, parse_constant=lambda c: pytest.fail(c))
        assert "\\x00" not in json.dumps(decoded, ensure_ascii=False)
        assert "\\u0000" not in json.dumps(decoded).replace("\\\\", "")
    for q in bad:
        assert "\x00" not in q.raw_json
        q.raw_json.encode("utf-8")


def test_a_key_the_store_cannot_hold_exactly_is_quarantined() -> None:
    for key in (b"A\\u0000", b"A\\ud800"):
        bad = _quarantined(b'{"key":"' + key + b'","updatedAt":"2026-11-20T08:00:00Z"}')
        assert bad.reason == "record key holds NUL or a lone surrogate" and bad.key is None


def test_control_characters_and_duplicate_fields_are_normalised() -> None:
    row = _stored(b'{"key":"C-1","updatedAt":"2026-11-20T08:00:00Z","m":"a\tb","d":1,"d":2}')
    assert json.loads(row.data_json) | {} == {
        "key": "C-1",
        "updatedAt": "2026-11-20T08:00:00Z",
        "m": "a\tb",
        "d": 2,
    }
    assert row.raw is None


def test_instant_helpers_raise_only_value_errors() -> None:
    assert after(NULL_DATE) == "0001-01-01T00:00:00.000001Z"
    assert after("0999-12-31T23:59:59.999999Z") == "1000-01-01T00:00:00.000000Z"
    with pytest.raises(ValueError):
        after("9999-12-31T23:59:59.999999Z")
