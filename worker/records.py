"""Check each upstream record on its own: store the good, quarantine the bad.

A page is only as broken as its worst record if the worker lets it be: here a
record without a usable ``key`` or ``updatedAt`` is set aside with its reason
while the rest of the page is stored (principle 9).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from worker.store import QuarantinedRecord, RecordRow
from worker.timeutil import canonical_instant

MAX_KEY_LENGTH = 512


def _encode(item: Any) -> str:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False, sort_keys=False)


def _problem(item: Any) -> str | None:
    """Why this record cannot be stored, or None when it can."""
    if not isinstance(item, dict):
        return f"record is {type(item).__name__}, not an object"
    key = item.get("key")
    if not isinstance(key, str) or not key:
        return "record has no string key"
    if len(key) > MAX_KEY_LENGTH:
        return f"record key longer than {MAX_KEY_LENGTH} characters"
    return None


def split_records(items: Iterable[Any]) -> tuple[list[RecordRow], list[QuarantinedRecord]]:
    """Good records ready to upsert, and bad ones with their reasons."""
    good: list[RecordRow] = []
    bad: list[QuarantinedRecord] = []
    for item in items:
        problem = _problem(item)
        key = item.get("key") if isinstance(item, dict) else None
        if problem is None:
            try:
                updated_at = canonical_instant(item.get("updatedAt"))
            except ValueError:
                problem = "record has no valid updatedAt"
        if problem is None:
            deleted_raw = item.get("deletedAt")
            try:
                deleted_at = None if deleted_raw is None else canonical_instant(deleted_raw)
            except ValueError:
                problem = "record has an invalid deletedAt"
        if problem is not None:
            bad.append(
                QuarantinedRecord(
                    reason=problem,
                    raw_json=_encode(item)[:100_000],
                    key=key if isinstance(key, str) else None,
                )
            )
            continue
        good.append(
            RecordRow(
                key=key, data_json=_encode(item), updated_at=updated_at, deleted_at=deleted_at
            )
        )
    return good, bad
