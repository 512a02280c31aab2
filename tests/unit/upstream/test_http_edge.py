"""The capped decoder and the bounded JSON parser, byte by byte."""

from __future__ import annotations

import gzip
import zlib

import pytest

from worker.upstream.http_edge import (
    MAX_JSON_DEPTH,
    BodyTooLarge,
    Decoder,
    UndecodableBody,
    loads_bounded,
    nesting_depth,
)

TEXT = b'{"data": [' + b", ".join(b'{"key": "k%d"}' % i for i in range(500)) + b"]}"


def _decode(encoding: str, body: bytes, limit: int, chunk: int) -> bytes:
    decoder = Decoder(encoding, limit)
    out = [decoder.feed(body[i : i + chunk]) for i in range(0, len(body), chunk)]
    return b"".join(out) + decoder.finish()


@pytest.mark.parametrize("chunk", [1, 7, 4096])
@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda d: zlib.compress(d)[2:-4]),
        ("gzip, deflate", lambda d: zlib.compress(gzip.compress(d))),
        ("gzip", lambda d: gzip.compress(d[:100]) + gzip.compress(d[100:])),  # two members
        ("", lambda d: d),
    ],
)
def test_every_encoding_decodes_whatever_the_chunking(
    encoding: str, encode: object, chunk: int
) -> None:
    assert callable(encode)
    assert _decode(encoding, encode(TEXT), len(TEXT), chunk) == TEXT


@pytest.mark.parametrize("chunk", [1, 4096])
def test_one_byte_over_the_cap_is_refused(chunk: int) -> None:
    with pytest.raises(BodyTooLarge):
        _decode("gzip", gzip.compress(TEXT), len(TEXT) - 1, chunk)


def test_every_layer_is_capped_not_only_the_last() -> None:
    inner = gzip.compress(b"\0" * 1_000_000)
    with pytest.raises(BodyTooLarge):
        _decode("gzip, gzip", gzip.compress(inner), 100_000, 4096)


def test_unknown_and_broken_encodings_are_undecodable() -> None:
    with pytest.raises(UndecodableBody, match="br"):
        Decoder("br", 10)
    with pytest.raises(UndecodableBody, match="truncated"):
        _decode("gzip", gzip.compress(TEXT)[:-10], len(TEXT), 4096)
    with pytest.raises(UndecodableBody, match="broken"):
        _decode("gzip", b"not gzip at all", len(TEXT), 4096)


def test_nesting_depth_skips_brackets_inside_strings() -> None:
    assert nesting_depth('{"a": "[[[[\\"[[", "b": [[1]]}') == 3
    assert nesting_depth("[]") == 1 and nesting_depth("1") == 0


def test_bounded_loads_refuse_depth_and_long_numbers_with_value_error() -> None:
    with pytest.raises(ValueError, match="nested"):
        loads_bounded(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    with pytest.raises(ValueError, match="number"):
        loads_bounded(b'{"code": ' + b"1" * 5000 + b"}")
    assert loads_bounded(b'{"error": {"code": 42, "ratio": 0.5}}') == {
        "error": {"code": 42, "ratio": 0.5}
    }
