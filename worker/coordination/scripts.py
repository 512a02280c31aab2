"""Calling Redis: Lua scripts from ``lua/`` folders, errors as CoordinationError.

Every Lua script lives in a ``lua/`` folder next to the code that runs it
(``worker/resilience/lua``, ``worker/coordination/lua``) and is read by
``lua_source``; ``coordination`` turns any Redis exception into
``CoordinationError``, so callers handle one type.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources

import redis
from redis.exceptions import RedisError

from worker.errors import CoordinationError

Clock = Callable[[], float]


@contextmanager
def coordination(what: str) -> Iterator[None]:
    """Translate any redis exception raised inside into CoordinationError."""
    try:
        yield
    except RedisError as exc:
        raise CoordinationError(f"{what}: {type(exc).__name__}: {exc}") from exc


def lua_source(package: str, *names: str) -> str:
    """The sources of ``<package>/lua/<name>.lua``, joined in order."""
    folder = resources.files(package).joinpath("lua")
    return "\n".join(folder.joinpath(f"{name}.lua").read_text("utf-8") for name in names)


def count_with_ttl(client: redis.Redis, key: str, *, ttl_s: float) -> int:
    """Add one to a counter that expires ``ttl_s`` after its last use; the new value."""
    with coordination(f"count {key}"):
        pipe = client.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, max(1, math.ceil(ttl_s)))
        count, _ = pipe.execute()
    return int(count)


def now_arg(clock: Clock | None) -> str:
    """ARGV[1] of every breaker script: empty (use Redis TIME) unless a test clock is set."""
    return "" if clock is None else repr(float(clock()))


def text(value: object) -> str:
    """Redis replies as str whether or not the client decodes responses."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)
