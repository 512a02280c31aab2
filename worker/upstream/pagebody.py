"""A list page's body, turned into records one at a time: one bad record never sinks its page.

The envelope (``{"data": [...], "meta": {...}, "links": {...}}``) is read
here by hand: a body that is not a JSON object, has no ``data`` array, or ends
inside a record is a page-level failure (``BodyError``; upstream.py makes it
a BadResponse). Each element of ``data`` is decoded on its own from its exact
slice of the body. An element that does not decode is delimited by a small
string-aware bracket scanner (iterative, so no depth limit of its own; the
body cap bounds its work) and kept with its raw text and the reason. A clean
page (``_clean_page``: nothing below needs care) is decoded and re-encoded by
orjson in one pass instead, to the same values; a record's exact text is then
cut from the body only if someone asks for it.

What the store holds for each odd kind of record is decided here and in
``worker.sync.records`` and written down in docs/records.md:

* ``data_json`` is always JSON that SQLite's JSON functions and PostgreSQL's
  ``jsonb`` both accept. Where the record as received is not (a NUL character,
  a lone surrogate, ``NaN``/``Infinity``, a number past PostgreSQL's
  ``numeric``), ``data_json`` holds an escaped form (U+FFFD for the
  character, ``null`` for the number) and ``exact`` is false: the store then
  keeps the exact text beside it (``records.raw``).
* Numbers are kept as written when a double would change them (huge
  integers, ``1e400``, 20 significant digits): never silently rounded.
* Text a TEXT column cannot hold (a NUL byte, bytes that are not UTF-8) is
  written ``\\xHH`` in raw text (``storable_text``); JSON text never contains
  a backslash followed by ``x``, so the escape cannot be confused with data.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

MAX_DEPTH = 256  # deeper records are quarantined (the parsers recurse)
_INT_DIGITS = 4000  # Python refuses int() of more than 4300 digits; longer ones stay text
# PostgreSQL numeric: at most 131072 digits before the point and 16383 after.
_PG_MAX_ADJUSTED = 131_071
_PG_MAX_SCALE = 16_383

_WS = re.compile(r"[ \t\n\r]*")
_STRUCTURE = re.compile(r'[\[\]{},"]')
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # how surrogateescape spells a non-UTF-8 byte
_NOT_STORABLE = re.compile("[\x00\ud800-\udfff]")
_NEEDS_CARE = re.compile("\\\\u0000|[\ud800-\udfff]")  # in json.dumps output
# What sends a page to the exact reading: an escaped NUL or surrogate, and a
# number a double might change (an exponent, or 16 digits and dots in a row;
# inside strings too, which costs only speed). orjson refuses the rest of what
# needs care (NaN, raw control characters, bytes that are not UTF-8).
_NOT_CLEAN = re.compile(
    rb"\\u0000|\\u[dD][89a-fA-F]|[:,\[][ \t\n\r]*-?(?:[0-9.]{16}|[0-9][0-9.]*[eE])"
)
# The regex costs more than orjson's decoding; this screen, a few times less, runs
# it only on a page that holds a \u escape, 16 digits in a row or a digit and an e.
_DIGITS_AND_E = bytes(
    ord("0") if chr(c) in "0123456789." else ord("e") if chr(c) in "eE" else ord(" ")
    for c in range(256)
)


class BodyError(ValueError):
    """The envelope itself is broken: the page cannot be read at all."""


class _Number:
    """A number literal a double would change; written back exactly as received."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _TooDeep(ValueError):
    pass


# Not frozen: a frozen dataclass sets each field through object.__setattr__,
# ~0.5 µs per record on the hot path (BENCHMARKS.md "Where the worker's time goes").
@dataclass(slots=True)
class BodyRecord:
    """One element of a page's ``data`` array, as received and as the store will hold it
    (treat as read-only)."""

    value: Any  # decoded (None when it could not be)
    data_json: str | None  # what the store's ``data`` holds; None when it cannot hold it
    exact: bool  # data_json is the record as received (no escape was needed)
    problem: str | None  # why it cannot be stored (quarantine reason), or None
    source: str  # the body text the record was cut from
    start: int
    end: int
    # A clean page's record: the page's texts, cut when asked; the record is number ``start``.
    texts: _RecordTexts | None = None

    def raw_text(self) -> str:
        """The record's exact text, with what a TEXT column cannot hold written ``\\xHH``."""
        if self.texts is not None:
            return self.texts.text(self.start)
        return storable_text(self.source[self.start : self.end])


@dataclass(frozen=True)
class ListBody:
    """A list page's records and its ``meta`` value (None when absent)."""

    records: list[BodyRecord]
    meta: Any


def storable_text(text: str) -> str:
    """``text`` with NUL and non-UTF-8 bytes (surrogateescaped) written as ``\\xHH``."""
    if _ESCAPED_BYTE.search(text):
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text.replace("\x00", "\\x00")


def _exact_float(text: str) -> float | _Number:
    # Up to 15 significant digits without an exponent always survive a double.
    if len(text) <= 16 and "e" not in text and "E" not in text:
        return float(text)
    value = float(text)
    if math.isfinite(value) and Decimal(repr(value)) == Decimal(text):
        return value
    return _Number(text)  # 1e400, 1e-400, or more digits than a double holds


def _exact_int(text: str) -> int | _Number:
    return int(text) if len(text) <= _INT_DIGITS else _Number(text)


_FAST = json.JSONDecoder(strict=False, parse_float=_exact_float)
_CAREFUL = json.JSONDecoder(strict=False, parse_float=_exact_float, parse_int=_exact_int)


def _holdable(number: _Number) -> bool:
    """Whether both stores hold the literal as a JSON number (PostgreSQL numeric's range)."""
    try:
        value = Decimal(number.text)
    except InvalidOperation:
        return False
    if not value.is_finite():
        return False
    if value.is_zero():
        return True
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    return value.adjusted() <= _PG_MAX_ADJUSTED and -exponent <= _PG_MAX_SCALE


def encode(value: Any) -> tuple[str, bool]:
    """(JSON text both stores hold, whether it is exactly the value) for a decoded value.

    Raises ValueError for a value nested deeper than MAX_DEPTH or one that is
    not JSON at all.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return _careful(value)
    if _NEEDS_CARE.search(text):
        return _careful(value)
    return text, True


def _careful(value: Any) -> tuple[str, bool]:
    exact = True

    def walk(item: Any, depth: int) -> str:
        nonlocal exact
        if depth > MAX_DEPTH:
            raise _TooDeep(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            if _NOT_STORABLE.search(item):
                exact = False
                item = _NOT_STORABLE.sub("\ufffd", item)
            return json.dumps(item, ensure_ascii=False)
        if isinstance(item, dict):
            fields = (f"{walk(str(k), depth)}:{walk(v, depth + 1)}" for k, v in item.items())
            return "{" + ",".join(fields) + "}"
        if isinstance(item, list):
            return "[" + ",".join(walk(v, depth + 1) for v in item) + "]"
        if isinstance(item, _Number):
            if _holdable(item):
                return item.text
            exact = False
            return "null"
        if isinstance(item, float) and not math.isfinite(item):
            exact = False  # NaN, Infinity, -Infinity
            return "null"
        if item is None or isinstance(item, bool | int | float):
            return json.dumps(item)
        raise ValueError(f"{type(item).__name__} is not a JSON value")

    text = walk(value, 1)
    return text, exact


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _value_end(text: str, start: int) -> int | None:
    """Where the value at ``start`` ends (a comma or bracket at its own level); None: truncated."""
    depth = 0
    pos = start
    while True:
        match = _STRUCTURE.search(text, pos)
        if match is None:
            return None
        char, at = match.group(), match.start()
        if char == '"':
            string = _STRING.match(text, at)
            if string is None:
                return None  # an unterminated string runs to the end of the body
            pos = string.end()
            continue
        if char in "[{":
            depth += 1
        elif char in "]}":
            if depth == 0:
                return at
            depth -= 1
        elif depth == 0:  # a comma at the record's own level
            return at
        pos = at + 1


def _depth(text: str) -> int:
    """The deepest nesting of brackets in ``text``, strings skipped."""
    depth = deepest = pos = 0
    while (match := _STRUCTURE.search(text, pos)) is not None:
        char, at = match.group(), match.start()
        if char == '"':
            string = _STRING.match(text, at)
            if string is None:
                break
            pos = string.end()
            continue
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
        pos = at + 1
    return deepest


def _decode(text: str, start: int) -> tuple[Any, int] | str:
    """(value, end) of the JSON value at ``start``, or why it does not decode."""
    try:
        return _FAST.raw_decode(text, start)
    except RecursionError:
        return "nested too deeply to parse"
    except ValueError:
        pass
    try:
        return _CAREFUL.raw_decode(text, start)  # integers too long for int()
    except RecursionError:
        return "nested too deeply to parse"
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        return f"not valid JSON: {reason}"


def _record(text: str, start: int, bad_bytes: bool) -> tuple[BodyRecord, int]:
    decoded = _decode(text, start)
    if not isinstance(decoded, str):
        value, end = decoded
        after = _skip(text, end)
        if after < len(text) and text[after] not in ",]":
            decoded = "not valid JSON: text after the record"
    if isinstance(decoded, str):
        ends = _value_end(text, start)
        if ends is None:
            raise BodyError("data: the body ends inside a record (truncated)")
        end = start + len(text[start:ends].rstrip(" \t\n\r"))
        if bad_bytes and _ESCAPED_BYTE.search(text, start, end):
            decoded = "not UTF-8: the record holds bytes that are not text"
        return BodyRecord(None, None, False, decoded, text, start, end), ends

    def bad(reason: str) -> tuple[BodyRecord, int]:
        return BodyRecord(value, None, False, reason, text, start, end), end

    if bad_bytes and _ESCAPED_BYTE.search(text, start, end):
        return bad("not UTF-8: the record holds bytes that are not text")
    brackets = text.count("[", start, end) + text.count("{", start, end)
    if brackets > MAX_DEPTH and _depth(text[start:end]) > MAX_DEPTH:
        return bad(f"nested deeper than {MAX_DEPTH} levels")
    try:
        data_json, exact = encode(value)
    except ValueError as exc:
        return bad(str(exc))
    return BodyRecord(value, data_json, exact, None, text, start, end), end


def _records(text: str, pos: int, bad_bytes: bool) -> tuple[list[BodyRecord], int]:
    if not text.startswith("[", pos):
        raise BodyError("data: not an array")
    records: list[BodyRecord] = []
    pos = _skip(text, pos + 1)
    while True:
        if text.startswith("]", pos):
            return records, pos + 1
        if text.startswith(",", pos):  # an empty element holds nothing; step over it
            pos = _skip(text, pos + 1)
            continue
        if pos >= len(text):
            raise BodyError("data: the body ends inside the array (truncated)")
        record, end = _record(text, pos, bad_bytes)
        records.append(record)
        pos = _skip(text, end)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
        elif not text.startswith("]", pos):
            raise BodyError("data: the body ends inside the array (truncated)")


def parse_list_body(body: bytes) -> ListBody:
    """The records and ``meta`` of a list page; BodyError when the envelope is broken."""
    return _clean_page(body) or _exact_page(body)


class _RecordTexts:
    """A clean page's body, cut into its records' exact texts the first time one is asked
    for (a record to quarantine is kept with its text as received, docs/records.md)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._texts: list[str] | None = None

    def text(self, index: int) -> str:
        if self._texts is None:
            self._texts = [record.raw_text() for record in _exact_page(self._body).records]
        return self._texts[index]


def _clean_page(body: bytes) -> ListBody | None:
    """A page with nothing that needs care, decoded by orjson; None: read it exactly.

    orjson decodes to what the exact reading would (it refuses what that one
    escapes or quarantines, and ``_NOT_CLEAN`` sends the rest there) and
    writes the same compact JSON, so every record is stored as received.
    """
    shapes = body.translate(_DIGITS_AND_E)
    suspect = b"0" * 16 in shapes or b"0e" in shapes or b"\\u" in body
    if suspect and _NOT_CLEAN.search(body):
        return None
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    data = envelope.get("data") if isinstance(envelope, dict) else None
    if not isinstance(data, list):
        return None
    texts = _RecordTexts(body)
    try:
        records = [
            BodyRecord(value, orjson.dumps(value).decode(), True, None, "", index, index, texts)
            for index, value in enumerate(data)
        ]
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: MAX_DEPTH decides
        return None
    return ListBody(records, envelope.get("meta"))


def _exact_page(body: bytes) -> ListBody:
    """parse_list_body, record by record from the body's text."""
    try:
        text, bad_bytes = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, bad_bytes = body.decode("utf-8", "surrogateescape"), True
    pos = _skip(text, 1 if text.startswith("\ufeff") else 0)
    if not text.startswith("{", pos):
        raise BodyError("body: not a JSON object")
    records: list[BodyRecord] | None = None
    meta: Any = None
    pos = _skip(text, pos + 1)
    if text.startswith("}", pos):
        raise BodyError("data: Field required")
    while True:
        name = _decode(text, pos)
        if isinstance(name, str) or not isinstance(name[0], str):
            raise BodyError("body: not a JSON object")
        pos = _skip(text, name[1])
        if not text.startswith(":", pos):
            raise BodyError("body: not a JSON object")
        pos = _skip(text, pos + 1)
        if name[0] == "data":
            records, pos = _records(text, pos, bad_bytes)
        else:
            value = _decode(text, pos)
            if isinstance(value, str):
                raise BodyError(f"{name[0]}: {value}")
            if name[0] == "meta":
                meta = value[0]
            pos = value[1]
        pos = _skip(text, pos)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
        elif text.startswith("}", pos):
            break
        else:
            raise BodyError("body: not a JSON object (truncated?)")
    if _skip(text, pos + 1) != len(text):
        raise BodyError("body: text after the JSON object")
    if records is None:
        raise BodyError("data: Field required")
    return ListBody(records, meta)
