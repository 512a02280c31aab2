"""A new coordination connection says HELLO and SELECT in one round trip.

Each connection a worker's thread pool opens costs its handshake; written
at once, HELLO and SELECT are one round trip instead of two. Real Redis.
"""

from __future__ import annotations

import pytest
import redis

from tests.support import REDIS_URL
from worker.coordination.client import redis_client

pytestmark = pytest.mark.integration


def _writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write to Redis, one per round trip, as it went on the wire."""
    writes: list[bytes] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(
        self: redis.connection.AbstractConnection, command: object, *a: object, **kw: object
    ) -> None:
        parts = command if isinstance(command, list) else [command]
        writes.append(b"".join(bytes(p) for p in parts))  # type: ignore[call-overload]
        send(self, command, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    return writes


def test_a_new_connection_costs_one_round_trip_before_its_first_command(
    test_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = int(REDIS_URL.rsplit("/", 1)[1])
    client = redis_client(REDIS_URL)
    writes = _writes(monkeypatch)
    client.set("handshake-probe", "1")
    monkeypatch.undo()

    handshake, command = writes  # the handshake, then the SET: nothing else
    assert b"HELLO" in handshake and b"SELECT" in handshake and b"SET" in command
    # It landed in the database the URL names.
    assert test_redis.connection_pool.connection_kwargs["db"] == db
    assert test_redis.get("handshake-probe") == b"1"
    assert client.connection_pool.get_connection().handshake_metadata is not None


def test_a_database_redis_does_not_have_fails_the_connection() -> None:
    base = REDIS_URL.rsplit("/", 1)[0]
    with pytest.raises(redis.ResponseError):
        redis_client(f"{base}/9999").ping()


def test_database_0_needs_no_select() -> None:
    base = REDIS_URL.rsplit("/", 1)[0]
    assert redis_client(f"{base}/0").ping() is True
