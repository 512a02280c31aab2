"""Hostile HTTP clients for tests and the bench: idle, trickling and fat-header sockets.

A ``Crowd`` runs on an event loop in a thread of its own, so one process holds
a thousand sockets cheaply while the caller sends honest requests next to
them. Three kinds, each reconnecting when the server closes it (the pressure
stays on, as an attacker's would):

    idle      connects and sends nothing
    trickle   sends one byte of an endless header every ``trickle_every_s``
    fat       sends ``fat_headers`` headers of ``fat_header_bytes`` each, then waits

``stats()`` says how many are open now, how many connections were made, and
how many the server closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass

TRICKLE_PREFIX = b"POST /upstream/webhooks HTTP/1.1\r\nHost: x\r\nX-Slow: "


@dataclass
class CrowdStats:
    """Counts of a crowd's sockets; ``open`` is the number connected right now."""

    open: int = 0
    connected: int = 0
    closed_by_server: int = 0
    refused: int = 0  # connect() itself failed


class Crowd:
    """Idle, trickling and fat-header sockets against one server (see the module doc)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        idle: int = 0,
        trickle: int = 0,
        fat: int = 0,
        trickle_every_s: float = 2.0,
        fat_headers: int = 99,
        fat_header_bytes: int = 65_000,
        reconnect: bool = True,
    ) -> None:
        self.host, self.port = host, port
        self.kinds = {"idle": idle, "trickle": trickle, "fat": fat}
        self.trickle_every_s = trickle_every_s
        self.fat_headers, self.fat_header_bytes = fat_headers, fat_header_bytes
        self.reconnect = reconnect
        self._stats = CrowdStats()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="crowd", daemon=True)
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    def start(self, *, timeout_s: float = 30.0) -> Crowd:
        """Start every socket; returns once each has connected once (or failed to)."""
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("the crowd did not connect in time")
        return self

    def stats(self) -> CrowdStats:
        with self._lock:
            return CrowdStats(**vars(self._stats))

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    # -- the loop's side ---------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        first: list[asyncio.Future[None]] = []
        tasks = []
        for kind, count in self.kinds.items():
            for _ in range(count):
                connected: asyncio.Future[None] = self._loop.create_future()
                first.append(connected)
                tasks.append(asyncio.create_task(self._client(kind, connected)))
        if first:
            await asyncio.wait(first)
        self._ready.set()
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _count(self, **changes: int) -> None:
        with self._lock:
            for name, delta in changes.items():
                setattr(self._stats, name, getattr(self._stats, name) + delta)

    async def _client(self, kind: str, connected: asyncio.Future[None]) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                self._count(refused=1)
                if not connected.done():
                    connected.set_result(None)
                await asyncio.sleep(0.5)
                continue
            self._count(open=1, connected=1)
            if not connected.done():
                connected.set_result(None)
            try:
                await self._pester(kind, reader, writer)
                self._count(closed_by_server=1)
            except (ConnectionError, OSError):
                self._count(closed_by_server=1)
            finally:
                self._count(open=-1)
                writer.transport.abort()
            if not self.reconnect:
                return
            await asyncio.sleep(0.1)

    async def _pester(
        self, kind: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Returns when the server closed the connection."""
        closed = asyncio.create_task(_until_closed(reader))
        try:
            if kind == "trickle":
                writer.write(TRICKLE_PREFIX)
                while not closed.done():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(asyncio.shield(closed), self.trickle_every_s)
                    if not closed.done():
                        writer.write(b"a")
                        await writer.drain()
            elif kind == "fat":
                writer.write(b"POST /upstream/webhooks HTTP/1.1\r\nHost: x\r\n")
                value = b"v" * self.fat_header_bytes
                for n in range(self.fat_headers):
                    if closed.done():
                        break
                    writer.write(b"X-Fat-%d: %s\r\n" % (n, value))
                    await writer.drain()
            await closed
        finally:
            closed.cancel()


async def _until_closed(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(65_536):
            pass
