"""`entity-sync dashboard` as it is run, against clients that connect and say nothing.

An idle socket used to hold one of the dashboard's threads for ever, so a few
hundred of them (a port scanner, a browser's speculative connections, a
misconfigured scraper) used up the process. The sockets now time out, a
request must arrive within a deadline however it trickles, and the number of
connections served at once is bounded.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, Env, wait_for
from worker.store import Connection

pytestmark = pytest.mark.integration

SOCKET_TIMEOUT_S = 2.0  # long enough to count the idle sockets' threads before they end
MAX_CONNECTIONS = 8


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def dashboard(tmp_path: Path, test_redis: object) -> Iterator[tuple[subprocess.Popen[str], int]]:
    env = Env(
        store_url=f"sqlite:///{tmp_path}/store.db",
        upstream_url="http://127.0.0.1:9",
        ENTITY_SYNC_DASHBOARD_SOCKET_TIMEOUT_SECONDS=str(SOCKET_TIMEOUT_S),
        ENTITY_SYNC_DASHBOARD_REQUEST_DEADLINE_SECONDS=str(2 * SOCKET_TIMEOUT_S),
        ENTITY_SYNC_DASHBOARD_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    )
    env.store().add_connection(Connection(id="c1", name="C1", entity_types=("assets",)))
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "worker.ops.cli", "dashboard", "--port", str(port)],
        env=env.process_env(),
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    said = [proc.stderr.readline() for _ in range(1)]
    while "dashboard (read-only) at" not in said[-1]:
        if proc.poll() is not None or len(said) > 20:
            raise AssertionError("the dashboard did not start: " + "".join(said))
        said.append(proc.stderr.readline())
    # Keep reading its log so a full pipe never blocks the process under test.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    try:
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(10)


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count in /proc")


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed the socket: EOF or a reset, within the client's timeout."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_idle_sockets_are_bounded_and_cut_and_the_page_still_answers(
    dashboard: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = dashboard
    assert get(port, "/healthz")[0] == 200
    baseline = threads_of(proc.pid)
    # Far more idle sockets than the dashboard serves at once.
    idle = [socket.create_connection(("127.0.0.1", port), timeout=15) for _ in range(60)]
    try:
        wait_for(lambda: threads_of(proc.pid) > baseline, 5, "the first idle sockets served")
        # Bounded: one thread per connection served, plus its deadline timer.
        assert threads_of(proc.pid) <= baseline + 2 * MAX_CONNECTIONS
        assert all(closed_by_server(sock) for sock in idle), "every idle socket is closed"
    finally:
        for sock in idle:
            sock.close()
    status, body = get(port, "/api/status")
    assert status == 200
    assert json.loads(body)["connections"][0]["id"] == "c1"
    assert get(port, "/")[0] == 200
    # The connection threads are gone with their sockets.
    wait_for(lambda: threads_of(proc.pid) <= baseline, 10, "the threads to end")


def test_a_request_trickled_slower_than_its_deadline_is_cut(
    dashboard: tuple[subprocess.Popen[str], int],
) -> None:
    """A byte more often than the socket timeout: only the request deadline ends it."""
    _, port = dashboard
    header = b"X-Pad: " + b"a" * 40  # never complete
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=15) as trickler:
        trickler.sendall(b"GET /api/status HTTP/1.1\r\n")  # the headers trickle
        for byte in header:
            try:
                trickler.send(bytes([byte]))
            except OSError:
                break  # cut off
            sent += 1
            time.sleep(SOCKET_TIMEOUT_S / 8)
            if sent % 4 == 0 and _eof(trickler):
                break
        else:
            raise AssertionError("the whole trickled request was read: no deadline")
    # It outlived a socket timeout (8 sends span 2 s): the deadline, not a silence, cut it.
    assert sent > 8
    assert get(port, "/healthz")[0] == 200


def _eof(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)
        sock.settimeout(15)
