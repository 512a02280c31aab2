"""The broker unreachable when another service enqueues: a clear error within seconds.

Three ways a broker is unreachable: nothing listens (refused), a host that
swallows packets (a listener that accepts and never answers, the worst case
for a client without timeouts), and a Redis that died after the client
connected once.
"""

from __future__ import annotations

import socket
import threading
import time

from chaos.harness import CaseResult
from chaos.infra import RedisServer, free_port
from worker.client import BrokerUnavailable, EntitySyncClient

LIMIT_S = 10.0  # "within seconds"


def _attempt(url: str, client: EntitySyncClient | None = None) -> tuple[str, float]:
    client = client or EntitySyncClient(url)
    started = time.monotonic()
    outcome: list[str] = []

    def send() -> None:
        try:
            client.sync_connection("acme")
            outcome.append("accepted (no error)")
        except BrokerUnavailable as exc:
            outcome.append(f"BrokerUnavailable: {str(exc)[:160]}")
        except Exception as exc:  # noqa: BLE001 - any other type is the finding
            outcome.append(f"{type(exc).__name__}: {str(exc)[:160]}")

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    thread.join(60)
    elapsed = time.monotonic() - started
    return (outcome[0] if outcome else "HUNG for 60 s"), elapsed


def run() -> CaseResult:
    result = CaseResult(
        fault="Broker unreachable when a service enqueues",
        scale="refused port, silent listener, Redis killed after a first send",
    )
    rows: list[tuple[str, str, float]] = []
    rows.append(("refused", *_attempt(f"redis://127.0.0.1:{free_port()}/0")))

    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)  # accepts (the kernel does), never answers
    try:
        rows.append(("silent", *_attempt(f"redis://127.0.0.1:{blackhole.getsockname()[1]}/0")))
    finally:
        blackhole.close()

    with RedisServer() as server:
        client = EntitySyncClient(server.url())
        client.sync_connection("acme")  # connected and pooled
        server.kill()
        rows.append(("died after a send", *_attempt(server.url(), client)))

    result.injected = len(rows)
    ok = [r for r in rows if r[1].startswith("BrokerUnavailable") and r[2] <= LIMIT_S]
    result.survived = len(ok) == len(rows)
    result.outcome = "; ".join(
        f"{name}: {what.split(':')[0]} after {t:.1f} s" for name, what, t in rows
    )
    result.notes.append("first message: " + rows[0][1])
    return result
