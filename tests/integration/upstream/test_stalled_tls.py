"""A TLS handshake that never gets an answer is cut at the request's deadline.

One transport (worker/upstream/transport.py) carries both the upstream client
and the webhook deliveries, so both are checked against a real local TCP
server that accepts and never answers the ClientHello.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from worker.errors import Unavailable
from worker.outbox.webhooks import WebhookClient
from worker.settings import Settings
from worker.upstream.client import PageQuery, UpstreamClient


@contextmanager
def silent_tls_server() -> Iterator[str]:
    """An https:// base URL whose server accepts, reads the ClientHello and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # kept open, never written to

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        thread.join(2)
        for conn in held:
            conn.close()


def test_the_upstream_client_cuts_a_stalled_handshake_at_the_deadline() -> None:
    settings = Settings(connect_timeout=30.0, read_timeout=30.0, request_deadline=1.5)  # type: ignore[call-arg]
    client = UpstreamClient(settings=settings)
    with silent_tls_server() as url:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="1.5s deadline"):
            client.list_page(url, "t", "assets", PageQuery())
        elapsed = time.monotonic() - started
    client.close()
    assert 1.4 < elapsed < 3.0


def test_a_webhook_post_cuts_a_stalled_handshake_at_the_deadline() -> None:
    with (
        silent_tls_server() as url,
        WebhookClient(
            connect_timeout=30.0, read_timeout=30.0, deadline_s=1.0, allow_private=True
        ) as client,
    ):
        started = time.monotonic()
        result = client.post(url + "/hook", body=b"{}", headers={})
        elapsed = time.monotonic() - started
    assert not result.delivered
    assert result.reason == "no complete answer within the 1s deadline"
    assert 0.9 < elapsed < 2.5
