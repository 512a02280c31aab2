"""What bounds one upstream answer: decoded-size caps and safe parsing.

``client.py`` maps answers to our errors; the time an answer may take is
bounded by ``transport.DeadlineTransport``, its size here:

* **Caps on decoded bytes.** ``Decoder`` inflates gzip/deflate, chained
  encodings included, a chunk at a time and never produces more than the cap:
  an 870-byte answer that inflates to 400 MB is refused after the cap.
* **Bounded parsing of small bodies** (error and status answers): nesting depth
  and number length are checked before ``json`` recurses or builds a bignum.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

MAX_JSON_DEPTH = 64  # error and status bodies are shallow; deeper is not the contract
MAX_NUMBER_CHARS = 64  # a longer number in an error body is not a code or a count


class BodyTooLarge(Exception):
    """The decoded body would pass the cap."""


class UndecodableBody(Exception):
    """A Content-Encoding we do not speak, or a compressed body that is broken."""


# -- decoding with a cap --------------------------------------------------------------

ACCEPT_ENCODING = "gzip, deflate"  # what Decoder speaks; nothing else is asked for


class _Inflate:
    """One gzip or deflate layer, producing at most ``limit`` bytes in all."""

    def __init__(self, encoding: str, limit: int) -> None:
        self._encoding = encoding
        self._limit = limit
        self._produced = 0
        # gzip: the gzip header; deflate: zlib-wrapped as RFC 9110 says, raw as
        # some servers send it (decided on the first bytes).
        self._wbits = zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS
        self._engine: Any = None
        self._head = b""  # deflate: the first byte, until a second one arrives

    def feed(self, data: bytes) -> bytes:
        if self._engine is None and self._encoding == "deflate" and len(self._head + data) < 2:
            self._head += data  # zlib-wrapped or raw: two bytes tell
            return b""
        data, self._head = self._head + data, b""
        out: list[bytes] = []
        while data:
            if self._engine is None or (self._engine.eof and self._encoding == "gzip"):
                # The first bytes, or a further gzip member after the one that ended.
                wbits = self._wbits
                if self._encoding == "deflate" and not _zlib_header(data):
                    wbits = -zlib.MAX_WBITS  # raw deflate: no zlib header
                self._engine = zlib.decompressobj(wbits)
            elif self._engine.eof:
                break  # bytes after the end of a deflate stream: ignored
            try:
                piece = self._engine.decompress(data, self._limit - self._produced + 1)
            except zlib.error as exc:
                raise UndecodableBody(f"broken {self._encoding} body: {exc}") from None
            out.append(self._count(piece))
            data = self._engine.unused_data if self._engine.eof else b""
        return b"".join(out)

    def finish(self) -> bytes:
        if self._head:
            raise UndecodableBody(f"truncated {self._encoding} body")
        if self._engine is None:
            return b""
        try:
            out = self._engine.flush()
        except zlib.error as exc:
            raise UndecodableBody(f"broken {self._encoding} body: {exc}") from None
        if not self._engine.eof:
            raise UndecodableBody(f"truncated {self._encoding} body")
        return self._count(out)

    def _count(self, out: bytes) -> bytes:
        self._produced += len(out)
        if self._produced > self._limit or self._engine.unconsumed_tail:
            raise BodyTooLarge(f"{self._encoding} body inflates past {self._limit} bytes")
        return out


def _zlib_header(data: bytes) -> bool:
    """Whether ``data`` (two bytes at least) opens with a zlib header (RFC 1950)."""
    return data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


class Decoder:
    """Undo a Content-Encoding (``gzip``, ``deflate``, chained, or none), capped.

    Every layer's output is capped, not only the last: a gzip inside a gzip
    inflates at each step.
    """

    def __init__(self, content_encoding: str | None, limit: int) -> None:
        names = [n.strip().lower() for n in (content_encoding or "").split(",") if n.strip()]
        names = [n for n in names if n != "identity"]
        unknown = [n for n in names if n not in ("gzip", "x-gzip", "deflate")]
        if unknown:
            raise UndecodableBody(f"unsupported Content-Encoding {', '.join(unknown)!r}")
        # Applied in the order listed, so they are undone last first.
        self._layers = [_Inflate("gzip" if n == "x-gzip" else n, limit) for n in reversed(names)]
        self._limit = limit
        self._size = 0

    def feed(self, chunk: bytes) -> bytes:
        for layer in self._layers:
            chunk = layer.feed(chunk)
        return self._count(chunk)

    def finish(self) -> bytes:
        out = b""
        for layer in self._layers:
            out = layer.feed(out) + layer.finish()
        return self._count(out)

    def _count(self, chunk: bytes) -> bytes:
        self._size += len(chunk)
        if self._size > self._limit:
            raise BodyTooLarge(f"decoded body passes {self._limit} bytes")
        return chunk


# -- bounded JSON for small bodies ----------------------------------------------------


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _short_number(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        if len(text) > MAX_NUMBER_CHARS:
            raise ValueError(f"a number of {len(text)} characters")
        return kind(text)

    return parse


def loads_bounded(body: bytes) -> Any:
    """``json.loads`` for small bodies; ValueError past the depth or number bounds."""
    text = body.decode("utf-8", errors="replace")
    if nesting_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text, parse_int=_short_number(int), parse_float=_short_number(float))
