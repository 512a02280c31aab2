"""Hostile record contents: what old source systems really hold, mixed into good data.

A connection with ``hostile`` in its spec serves about one record in
``every`` in one of the odd forms below, chosen per key from the connection's
seed, so the same record is always odd in the same way. The table underneath
stays the truth: only the bytes of the answer change. ``OUTCOME`` says what
the worker must make of each class (docs/records.md has the why); tests read
it, and ``odd_class`` tells them which keys are odd.

Odd records never change where a record sorts: the sandbox keeps ordering
by the record's true ``updatedAt``, whatever text it sends. So keep good
records in every page (``every`` of 2 or more): a full page made only of
records whose ``updatedAt`` text disagrees with their place would look, to
any client, like an upstream ignoring its filter. ``megabyte`` records must
stay rare enough for a page to fit the worker's body cap.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

Record = dict[str, Any]
Outcome = Literal["stored", "quarantined"]

MEGABYTE_CHARS = 1_100_000


def _dump(record: Record) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


def _with(record: Record, tail: bytes) -> bytes:
    """The record's JSON with raw ``"name":value`` text appended as its last field(s)."""
    return _dump(record)[:-1] + b"," + tail + b"}"


def _stamp(record: Record, name: str, text: str) -> bytes:
    return _dump({**record, name: text})


_PAST_DOUBLE = b'"big":1e400,"tiny":1e-400,"exact":0.1000000000000000055511'

_CLASSES: Mapping[str, tuple[Outcome, Callable[[Record], bytes]]] = {
    "nul_text": ("stored", lambda r: _dump({**r, "note": "line 1\x00line 2"})),
    "nul_byte": ("stored", lambda r: _with(r, b'"note":"raw\x00byte"')),
    "nan": ("stored", lambda r: _with(r, b'"reading":NaN')),
    "infinity": ("stored", lambda r: _with(r, b'"limit":Infinity,"floor":-Infinity')),
    "huge_int": ("stored", lambda r: _with(r, b'"serial":' + b"7" * 5000)),
    "past_double": (
        "stored",
        lambda r: _with(r, b'"big":1e400,"tiny":1e-400,"exact":0.1000000000000000055511'),
    ),
    "past_numeric": ("stored", lambda r: _with(r, b'"ratio":1e200000')),
    "lone_surrogate": ("stored", lambda r: _with(r, b'"label":"half \\ud800 pair"')),
    "nested": ("stored", lambda r: _with(r, b'"tree":' + b"[" * 200 + b"]" * 200)),
    "megabyte": ("stored", lambda r: _dump({**r, "manual": "m" * MEGABYTE_CHARS})),
    "control_chars": ("stored", lambda r: _with(r, b'"memo":"tab\there\nnewline"')),
    "duplicate_field": ("stored", lambda r: _with(r, b'"dup":1,"dup":2')),
    "offset_updated_at": ("stored", lambda r: _stamp(r, "updatedAt", _offset(r["updatedAt"]))),
    "null_date_updated_at": (
        "stored",
        lambda r: _stamp(r, "updatedAt", "0001-01-01T00:00:00+01:00"),
    ),
    "year_below_1000": ("stored", lambda r: _stamp(r, "updatedAt", "0999-05-01T00:00:00Z")),
    "null_date_deleted_at": ("stored", lambda r: _stamp(r, "deletedAt", "0001-01-01T00:00:00Z")),
    "ancient_created_at": ("stored", lambda r: _stamp(r, "createdAt", "0042-01-01T00:00:00-03:00")),
    # Quarantined: the store cannot hold them faithfully, or they have no valid version.
    "invalid_utf8": ("quarantined", lambda r: _with(r, b'"maker":"M\xfcller \xff"')),
    "too_deep": ("quarantined", lambda r: _with(r, b'"tree":' + b"[" * 300 + b"]" * 300)),
    "invalid_json": ("quarantined", lambda r: _with(r, b'"flag":tru')),
    "updated_at_past_9999": (
        "quarantined",
        lambda r: _stamp(r, "updatedAt", "9999-12-31T23:00:00-05:00"),
    ),
    "no_updated_at": ("quarantined", lambda r: _stamp(r, "updatedAt", "00/00/0000")),
}

CLASSES: tuple[str, ...] = tuple(_CLASSES)
OUTCOME: Mapping[str, Outcome] = {name: outcome for name, (outcome, _) in _CLASSES.items()}
KEYLESS = frozenset({"invalid_json"})  # quarantined without a key: the record did not decode


def _offset(instant: str) -> str:
    """The same instant written with a +01:00 offset instead of Z."""
    moment = datetime.fromisoformat(instant).astimezone(UTC)
    local = moment.astimezone(timezone(timedelta(hours=1)))
    return local.isoformat(timespec="microseconds" if moment.microsecond else "seconds")


def odd_class(
    seed: int, key: str, *, every: int, classes: tuple[str, ...] | None = None
) -> str | None:
    """The odd class of one record, or None: a pure function of seed and key."""
    chosen = classes or CLASSES
    digest = zlib.crc32(f"{seed}:hostile:{key}".encode())
    if digest % every:
        return None
    return chosen[(digest // every) % len(chosen)]


def render(
    envelope: Mapping[str, Any], seed: int, *, every: int, classes: tuple[str, ...] | None
) -> bytes:
    """A list page's body with its odd records in their odd forms."""
    records = envelope["data"]
    rest = {name: value for name, value in envelope.items() if name != "data"}
    parts = []
    for record in records:
        key = record.get("key")  # a lie or a bad_record scenario may have taken it
        odd = odd_class(seed, key, every=every, classes=classes) if isinstance(key, str) else None
        parts.append(_dump(record) if odd is None else _CLASSES[odd][1](record))
    tail = _dump(rest)[1:]
    return b'{"data":[' + b",".join(parts) + b"]" + (b"," + tail if len(tail) > 1 else b"}")
