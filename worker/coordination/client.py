"""The one Redis client factory: explicit timeouts, so an outage fails fast.

One immediate retry on a dropped connection (a restarted server closed it);
none on a timeout: redis-py's default (three, with backoff) would hold a
task 20 s on a frozen server before anyone hears of it, and a timed-out
script may already have run.

A new connection sends only what it needs (HELLO, SELECT), both in one
write, then reads both answers: one round trip. redis-py would wait for
each, and also send two ``CLIENT SETINFO``, a ``CLIENT MAINT_NOTIFICATIONS``
and a health-check PING of the connection it just opened, five more round
trips per connection a worker's thread pool opens (docs/design.md, "Around
each request": round trips are the cost we count). Idle connections are
still checked every ``HEALTH_CHECK_S``.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.utils import str_if_bytes

SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 3.0
HEALTH_CHECK_S = 30


def redis_client(
    url: str, *, timeout_s: float = SOCKET_TIMEOUT_S, connect_timeout_s: float = CONNECT_TIMEOUT_S
) -> redis.Redis:
    """A client of the Redis at ``url`` (the workers' coordination store)."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=timeout_s,
        health_check_interval=HEALTH_CHECK_S,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        **_quiet_handshake(),
    )


def _quiet_handshake() -> dict[str, Any]:
    """Options that leave out the handshake's optional commands, per redis-py version."""
    try:
        from redis.driver_info import DriverInfo  # redis-py >= 8
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:
        return {"lib_name": None, "lib_version": None}
    return {
        "driver_info": DriverInfo(name=None, lib_version=None),
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
        "redis_connect_func": _handshake_in_one_round_trip,
    }


def _handshake_in_one_round_trip(connection: Any) -> None:
    """The handshake of a new connection: HELLO and SELECT sent at once, no health PING.

    A connection that needs more (a password, a client name, RESP2 or
    database 0) gets redis-py's own handshake, which sends each in turn.
    """
    if not _hello_and_select_is_all(connection):
        connection.on_connect_check_health(check_health=False)
        return
    connection._parser.on_connect(connection)  # what redis-py's handshake does first
    handshake = connection.pack_commands(
        [("HELLO", connection.protocol), ("SELECT", connection.db)]
    )
    connection.send_packed_command(handshake, check_health=False)
    hello = connection.read_response()
    selected = connection.read_response()
    proto = hello.get(b"proto", hello.get("proto")) if isinstance(hello, dict) else None
    if proto != connection.protocol:
        raise redis.ConnectionError("Invalid RESP version")
    if str_if_bytes(selected) != "OK":
        raise redis.ConnectionError("Invalid Database")
    connection.handshake_metadata = hello


def _hello_and_select_is_all(connection: Any) -> bool:
    """Whether redis-py's handshake of this connection would send HELLO and SELECT only."""
    return (
        int(connection.protocol) == 3
        and bool(connection.db)
        and not connection.credential_provider
        and not connection.username
        and not connection.password
        and not connection.client_name
    )
