"""Each record is checked on its own: the good are stored, the bad quarantined."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from worker.records import split_records
from worker.secrets import SecretBox, generate_key


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
