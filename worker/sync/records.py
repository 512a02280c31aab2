"""Check each upstream record on its own: store the good, quarantine the bad.

A page is only as broken as its worst record if the worker lets it be: here a
record that did not decode, or has no usable ``key`` or ``updatedAt``, is set
aside with its raw text and reason while the rest of the page is stored
(principle 10). What the store holds for each odd kind of record is in
docs/records.md; decoding is ``worker.upstream.pagebody``, instants ``worker.timeutil``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from worker.store import QuarantinedRecord, RecordRow
from worker.timeutil import canonical_instant, is_null_date
from worker.upstream.pagebody import BodyRecord, encode, storable_text

MAX_KEY_LENGTH = 512
MAX_RAW_CHARS = 100_000  # a quarantined record is kept for a person to read, not whole


# Already UTC with a Z, at second or microsecond precision: what most upstreams send.
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")
_PLAIN_UTC = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?Z")


def _instant(value: Any) -> str:
    """canonical_instant, without its formatting for instants already in the store's form."""
    if isinstance(value, str) and _PLAIN_UTC.fullmatch(value):
        datetime.fromisoformat(value)  # validates (month 13, day 31 of a short month...)
        return value if len(value) == 27 else value[:19] + ".000000Z"
    return canonical_instant(value)


def _usable(key: str) -> bool:
    """A key the store's TEXT primary key can hold exactly."""
    if not 0 < len(key) <= MAX_KEY_LENGTH:
        return False
    # Most keys are ASCII: then only a NUL could be wrong, and no regex is needed.
    if key.isascii():
        return "\x00" not in key
    return _NOT_TEXT.search(key) is None


def _plain_raw(item: Any) -> str:
    """The JSON text of an already decoded value, for quarantine (NaN and escapes kept)."""
    try:
        return json.dumps(item, ensure_ascii=True, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return storable_text(repr(item))


def _received(item: Any) -> BodyRecord:
    """A value decoded elsewhere (tests, older callers) as if cut from a body."""
    try:
        data_json, exact = encode(item)
    except (ValueError, RecursionError) as exc:
        raw = _plain_raw(item)
        return BodyRecord(item, None, False, str(exc), raw, 0, len(raw))
    raw = data_json if exact else _plain_raw(item)
    return BodyRecord(item, data_json, exact, None, raw, 0, len(raw))


def check_record(item: Any) -> RecordRow | QuarantinedRecord:
    """The record ready to upsert, or why it cannot be stored."""
    received = item if isinstance(item, BodyRecord) else _received(item)
    value = received.value
    key = value.get("key") if isinstance(value, dict) else None
    usable_key = key if isinstance(key, str) and _usable(key) else None
    if received.problem is not None or received.data_json is None:
        return _quarantine(received, received.problem or "record cannot be stored", usable_key)
    if not isinstance(value, dict):
        return _quarantine(received, f"record is {type(value).__name__}, not an object")
    if not isinstance(key, str) or not key:
        return _quarantine(received, "record has no string key")
    if len(key) > MAX_KEY_LENGTH:
        return _quarantine(received, f"record key longer than {MAX_KEY_LENGTH} characters")
    if usable_key is None:
        return _quarantine(received, "record key holds NUL or a lone surrogate")
    try:
        updated_at = _instant(value.get("updatedAt"))
    except ValueError:
        return _quarantine(received, "record has no valid updatedAt", key)
    deleted_raw = value.get("deletedAt")
    try:
        # The null-date sentinel as deletedAt means "not deleted".
        not_deleted = deleted_raw is None or is_null_date(deleted_raw)
        deleted_at = None if not_deleted else _instant(deleted_raw)
    except ValueError:
        return _quarantine(received, "record has an invalid deletedAt", key)
    raw = None if received.exact else received.raw_text()
    # Positional: keyword arguments cost more, once per record.
    return RecordRow(key, received.data_json, updated_at, deleted_at, raw)


def _quarantine(received: BodyRecord, reason: str, key: str | None = None) -> QuarantinedRecord:
    raw = received.raw_text()
    if len(raw) > MAX_RAW_CHARS:
        reason = f"{reason} (raw text cut to {MAX_RAW_CHARS} of {len(raw)} characters)"
        raw = raw[:MAX_RAW_CHARS]
    return QuarantinedRecord(reason=reason, raw_json=raw, key=key)


def split_records(items: Iterable[Any]) -> tuple[list[RecordRow], list[QuarantinedRecord]]:
    """Good records ready to upsert, and bad ones with their reasons."""
    good: list[RecordRow] = []
    bad: list[QuarantinedRecord] = []
    for item in items:
        checked = check_record(item)
        if isinstance(checked, RecordRow):
            good.append(checked)
        else:
            bad.append(checked)
    return good, bad
