"""Calling Redis: Lua scripts from ``lua/`` folders, errors as CoordinationError.

Every Lua script lives in a ``lua/`` folder next to the code that runs it
(``worker/resilience/lua``, ``worker/coordination/lua``) and is read by
``lua_source``; ``coordination`` turns any Redis exception into
``CoordinationError``, so callers handle one type.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError, RedisError

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


@dataclass(frozen=True)
class ScriptCall:
    """One registered script with its keys and arguments, to send with others."""

    script: Script
    keys: list[str]
    args: list[Any]


def in_one_round_trip(
    client: redis.Redis, calls: Sequence[ScriptCall], *, reads: Sequence[str] = ()
) -> tuple[list[Any], list[Any]]:
    """Send scripts (then EXISTS of each key in ``reads``) in one pipeline.

    Returns the scripts' replies and the reads' answers. A script this Redis
    has not loaded yet (once per script per process, or after a restart) is
    run again alone, which loads it; redis-py's own pipeline would instead
    ask SCRIPT EXISTS on every execute, a second round trip each time. Not a
    transaction: each script is atomic on its own, as when sent one by one.
    """
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
    for key in reads:
        pipe.exists(key)
    replies = pipe.execute(raise_on_error=False)
    out: list[Any] = []
    for call, reply in zip(calls, replies, strict=False):
        if isinstance(reply, NoScriptError):
            reply = call.script(keys=call.keys, args=call.args)
        elif isinstance(reply, Exception):
            raise reply
        out.append(reply)
    answers = replies[len(calls) :]
    for answer in answers:
        if isinstance(answer, Exception):
            raise answer
    return out, answers


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
