"""The one deadline thread (transport._Deadlines) expires late requests and only those."""

from __future__ import annotations

import socket
import time

from worker.upstream.transport import Watchdog, _current


def _watched(seconds: float) -> tuple[Watchdog, socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    watchdog = Watchdog(seconds)
    watchdog.__enter__()
    _current.request.adopt(ours)
    return watchdog, ours, theirs


def test_a_request_past_its_deadline_has_its_socket_shut() -> None:
    watchdog, ours, theirs = _watched(0.2)
    theirs.settimeout(5)
    started = time.monotonic()
    assert ours.recv(1) == b""  # woken by the shutdown, not by data
    assert time.monotonic() - started < 4
    assert watchdog.expired
    watchdog.__exit__(None, None, None)
    ours.close()
    theirs.close()


def test_a_finished_request_is_never_expired() -> None:
    late, late_ours, late_theirs = _watched(0.3)
    done, ours, theirs = _watched(0.1)
    done.__exit__(None, None, None)  # finished before its deadline: the socket is pooled
    assert late_ours.recv(1) == b""  # the later deadline passes ...
    late.__exit__(None, None, None)
    theirs.sendall(b"x")
    ours.settimeout(1)
    assert ours.recv(1) == b"x"  # ... and the finished request's socket still works
    assert not done._request.expired
    for sock in (late_ours, late_theirs, ours, theirs):
        sock.close()


def test_many_finished_requests_are_forgotten() -> None:
    for _ in range(3000):
        with Watchdog(60):
            pass
    from worker.upstream.transport import _deadlines

    assert len(_deadlines._waiting) <= 1024
