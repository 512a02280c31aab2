"""What makes a verified body an event worth keeping, besides its shape.

``parse_event`` (worker/inbound/actions.py) checks the shape with pydantic;
these check what pydantic does not: text every store keeps as sent (no NUL,
no lone surrogate, in any string, keys included), a bounded depth, and a
``created_at`` inside the freshness window (the receiver at receipt, the task
before it acts).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from worker.timeutil import parse_instant

MAX_DEPTH = 32  # the contract's events nest three levels; this leaves room for new fields


def unstorable(document: object) -> str | None:
    """Why a parsed body cannot be kept as it is (NUL, lone surrogate, depth); None if it can.

    Walks with a stack of its own, not by recursion: the body may nest as deep
    as the parser allowed.
    """
    stack: list[tuple[object, str, int]] = [(document, "body", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"{where[:100]}: nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, str):
            problem = _bad_text(value)
            if problem:
                return f"{where[:100]}: {problem}"
        elif isinstance(value, dict):
            for key, item in value.items():
                problem = _bad_text(key)
                if problem:
                    return f"{where[:100]}: a key {problem}"
                stack.append((item, f"{where}.{_shown(key)}", depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
    return None


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "holds a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate (not text)"
    return None


def _shown(key: str) -> str:
    """A key as it may appear in a reason: printable ASCII, short."""
    return key[:40].encode("ascii", "backslashreplace").decode("ascii")


def freshness_problem(
    created_at: str, *, now: datetime, max_age_s: float, skew_s: float
) -> str | None:
    """Why an event created at ``created_at`` is not fresh at ``now``; None when it is.

    Older than ``max_age_s``: a replay, or a retry too late to act on. Later
    than ``now`` by more than ``skew_s``: a clock far off, or a forgery meant
    to win every later ordering comparison (``upstream_aspects``).
    """
    created = parse_instant(created_at)
    if created < now - timedelta(seconds=max_age_s):
        return f"created_at {created_at} is older than the {max_age_s:g} s accepted"
    if created > now + timedelta(seconds=skew_s):
        return f"created_at {created_at} is more than {skew_s:g} s ahead of this clock"
    return None
