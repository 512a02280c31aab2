"""Check each upstream record on its own: store the good, quarantine the bad.

A page is only as broken as its worst record if the worker lets it be: here a
record without a usable ``key`` or ``updatedAt`` is set aside with its reason
while the rest of the page is stored (principle 9).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from worker.store import QuarantinedRecord, RecordRow
from worker.timeutil import canonical_instant

MAX_KEY_LENGTH = 512
MAX_RAW_CHARS = 100_000  # a quarantined record is kept for a person to read, not whole


# Already UTC with a Z, at second or microsecond precision: what most upstreams send.
_PLAIN_UTC = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?Z")


def _instant(value: Any) -> str:
    """canonical_instant, without its strftime for instants already in the store's form."""
    if isinstance(value, str) and _PLAIN_UTC.fullmatch(value):
        datetime.fromisoformat(value)  # validates (month 13, day 31 of a short month...)
        return value if len(value) == 27 else value[:19] + ".000000Z"
    return canonical_instant(value)


def _encode(item: Any) -> str:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False, sort_keys=False)


def check_record(item: Any) -> RecordRow | QuarantinedRecord:
    """The record ready to upsert, or why it cannot be stored."""
    if not isinstance(item, dict):
        return _quarantine(item, f"record is {type(item).__name__}, not an object")
    key = item.get("key")
    if not isinstance(key, str) or not key:
        return _quarantine(item, "record has no string key")
    if len(key) > MAX_KEY_LENGTH:
        return _quarantine(item, f"record key longer than {MAX_KEY_LENGTH} characters")
    try:
        updated_at = _instant(item.get("updatedAt"))
    except ValueError:
        return _quarantine(item, "record has no valid updatedAt", key)
    deleted_raw = item.get("deletedAt")
    try:
        deleted_at = None if deleted_raw is None else _instant(deleted_raw)
    except ValueError:
        return _quarantine(item, "record has an invalid deletedAt", key)
    return RecordRow(key=key, data_json=_encode(item), updated_at=updated_at, deleted_at=deleted_at)


def _quarantine(item: Any, reason: str, key: str | None = None) -> QuarantinedRecord:
    return QuarantinedRecord(reason=reason, raw_json=_encode(item)[:MAX_RAW_CHARS], key=key)


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
