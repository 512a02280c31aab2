"""A clean page read by orjson (pagebody._clean_page) gives what the exact reading gives."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.sync.records import split_records
from worker.upstream.pagebody import _clean_page, _exact_page, parse_list_body

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: float(d))
    | st.text()
    | st.sampled_from(["\x00", "\ud800", "a\udfffb", "\U0001f600", "\t\n", "e5", "1e5"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


def _record(extra: dict[str, Any]) -> dict[str, Any]:
    return {"key": "k-1", "updatedAt": "2026-01-01T00:00:00Z", **extra}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(st.dictionaries(st.text(max_size=5), values, max_size=4), max_size=4),
    ascii_only=st.booleans(),
    spaced=st.booleans(),
)
def test_a_page_reads_the_same_on_both_paths(
    records: list[dict[str, Any]], ascii_only: bool, spaced: bool
) -> None:
    separators = (", ", ": ") if spaced else (",", ":")
    page = {"data": [_record(r) for r in records], "meta": {"total": len(records)}}
    try:
        body = json.dumps(page, ensure_ascii=ascii_only, separators=separators).encode(
            "utf-8", "surrogatepass"
        )
    except ValueError:
        return
    exact = _exact_page(body)
    read = parse_list_body(body)
    assert read.meta == exact.meta
    assert len(read.records) == len(exact.records)
    for got, want in zip(read.records, exact.records, strict=True):
        assert (got.exact, got.problem) == (want.exact, want.problem)
        assert got.raw_text() == want.raw_text()
        if want.data_json is not None:
            assert got.data_json is not None
            assert _same(json.loads(got.data_json), json.loads(want.data_json))
    assert [type(r) for r in split_records(read.records)[0]] == [
        type(r) for r in split_records(exact.records)[0]
    ]


def test_a_clean_page_takes_the_orjson_path() -> None:
    body = json.dumps({"data": [_record({"n": 1.5, "s": "x"})], "meta": None}).encode()
    read = _clean_page(body)
    assert read is not None
    assert read.records[0].data_json == json.dumps(
        _record({"n": 1.5, "s": "x"}), separators=(",", ":")
    )
    assert read.records[0].raw_text() == json.dumps(_record({"n": 1.5, "s": "x"}))


def test_what_needs_care_takes_the_exact_path() -> None:
    for odd in (
        b'{"data":[{"n":1e5}]}',
        b'{"data":[{"n":0.10000000000000000555}]}',
        b'{"data":[{"n":123456789012345678901234}]}',
        b'{"data":[{"s":"a\\u0000b"}]}',
        b'{"data":[{"s":"\\ud800"}]}',
        b'{"data":[{"n":NaN}]}',
        b'{"data":[{"s":"a\tb"}]}',
        b'{"data":[{"s":"M\xfcller"}]}',
        b'\xef\xbb\xbf{"data":[]}',
        b'{"data":[1,,2]}',
        b'{"data":{}}',
        b"[]",
    ):
        assert _clean_page(odd) is None, odd
