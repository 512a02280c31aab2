"""One HTTP/1.1 exchange of the receiver: read a request within deadlines and caps, answer it.

The receiver (worker/inbound/receiver.py) decides what to answer; this module
decides how much a client may send and for how long (``Limits``), using h11
to parse. ``read_request`` returns the request with its whole body, or raises
``Refused`` with the status to answer (``answer=False``: close unanswered);
``send`` writes one answer and closes politely.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

import h11

READ_BYTES = 16 * 1024  # one read from a socket
LINGER_S = 2.0  # after an answer, how long unread input is drained before the close
LINGER_BYTES = 256 * 1024


@dataclass(frozen=True)
class Limits:
    """What one connection may take, in time and bytes, and how many may be open."""

    first_byte_s: float = 5.0  # from accept to the first byte (then closed unanswered)
    headers_s: float = 10.0  # from accept to the end of the headers (then 408)
    body_s: float = 10.0  # from the end of the headers to the end of the body (then 408)
    max_header_bytes: int = 16 * 1024  # request line and headers together (431)
    max_headers: int = 64  # (431)
    max_connections: int = 4096  # open at once; beyond, closed unanswered
    store_threads: int = 8  # parse and keep: the store work of the events


@dataclass(frozen=True)
class Request:
    """A whole request: method, path (no query), headers (names lower-case), body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    """What to answer; ``publish``: an event id to publish once the answer is out."""

    status: HTTPStatus
    body: dict[str, object]
    publish: str | None = None


class Refused(Exception):
    """Answer with this status and reason (``answer=False``: close without a word)."""

    def __init__(self, status: HTTPStatus, reason: str, *, answer: bool = True) -> None:
        super().__init__(reason)
        self.status, self.reason, self.answer = status, reason, answer


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: Limits, max_bytes: int
) -> Request | None:
    """The next request, body included, within ``limits``; None if the client just closed.

    A ``Content-Length`` is required for a POST (411; chunked is refused, its
    size is unknown before reading) and at most ``max_bytes`` (413, unread).
    """
    loop = asyncio.get_running_loop()
    accepted = loop.time()
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
    first = await _read(reader, limits.first_byte_s)
    if first is None:
        raise Refused(
            HTTPStatus.REQUEST_TIMEOUT, f"no request within {limits.first_byte_s:g} s", answer=False
        )
    if not first:
        return None  # connected and closed: a port probe
    conn.receive_data(first)
    head = await _head(conn, reader, limits, deadline=accepted + limits.headers_s)
    if head is None:
        return None
    headers = {
        name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(head.headers)
    }  # reversed: the first of a repeated header wins
    request = Request(
        method=head.method.decode("ascii", "replace")[:20],
        path=urlsplit(head.target.decode("ascii", "replace")).path,
        headers=headers,
        body=b"",
    )
    if request.method != "POST":
        return request
    raw = headers.get("content-length")
    if raw is None or "transfer-encoding" in headers:
        raise Refused(HTTPStatus.LENGTH_REQUIRED, "no Content-Length")
    length = int(raw)  # h11 has checked it is a number
    if length > max_bytes:
        raise Refused(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"body of {length} bytes over the {max_bytes} allowed",
        )
    if conn.they_are_waiting_for_100_continue:
        # curl and others wait (a second) for this before sending a larger body.
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = await _body(conn, reader, length, deadline=loop.time() + limits.body_s)
    return Request(request.method, request.path, headers, body)


async def _head(
    conn: h11.Connection, reader: asyncio.StreamReader, limits: Limits, *, deadline: float
) -> h11.Request | None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = HTTPStatus(exc.error_status_hint)
            if status is HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
                raise Refused(status, f"headers over {limits.max_header_bytes} bytes") from None
            raise Refused(status, f"not HTTP/1.1: {exc}"[:200]) from None
        if isinstance(event, h11.Request):
            if len(event.headers) > limits.max_headers:
                raise Refused(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                    f"{len(event.headers)} headers, over the {limits.max_headers} allowed",
                )
            return event
        if event is not h11.NEED_DATA:
            return None  # the client closed before a whole request
        data = await _read(reader, deadline - loop.time())
        if data is None:
            raise Refused(
                HTTPStatus.REQUEST_TIMEOUT, f"headers not sent within {limits.headers_s:g} s"
            )
        conn.receive_data(data)


async def _body(
    conn: h11.Connection, reader: asyncio.StreamReader, length: int, *, deadline: float
) -> bytes:
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            got = sum(map(len, chunks))
            raise Refused(
                HTTPStatus.BAD_REQUEST, f"body ended after {got} of {length} bytes"
            ) from None
        if isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        else:
            data = await _read(reader, deadline - loop.time())
            if data is None:
                raise Refused(HTTPStatus.REQUEST_TIMEOUT, "body not sent in time")
            conn.receive_data(data)


async def _read(reader: asyncio.StreamReader, timeout_s: float) -> bytes | None:
    """Up to READ_BYTES, b"" at EOF, None when nothing came within ``timeout_s``."""
    if timeout_s <= 0:
        return None
    try:
        return await asyncio.wait_for(reader.read(READ_BYTES), timeout_s)
    except TimeoutError:
        return None
    except (ConnectionError, OSError):
        return b""


async def send(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, answer: Answer) -> None:
    """Write the answer, then drain what the client still sends for a moment.

    Closing a socket with unread input makes the kernel send a reset, which can
    destroy the answer before the client reads it (a 413 sent while the body
    is still arriving); reading a bounded amount first lets it arrive.
    """
    payload = json.dumps(answer.body).encode()
    status = answer.status
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n"
        "Server: entity-sync-receiver\r\n\r\n"
    ).encode()
    try:
        writer.write(head + payload)
        await asyncio.wait_for(writer.drain(), LINGER_S)
        if writer.can_write_eof():
            writer.write_eof()
        loop = asyncio.get_running_loop()
        deadline, drained = loop.time() + LINGER_S, 0
        while drained < LINGER_BYTES:
            data = await _read(reader, deadline - loop.time())
            if not data:
                break
            drained += len(data)
    except (TimeoutError, ConnectionError, OSError):
        pass  # the client went away or does not read: nothing more to do
