"""Calling Redis: Lua scripts from ``lua/`` folders, errors as CoordinationError.

Every Lua script lives in a ``lua/`` folder next to the code that runs it
(``worker/resilience/lua``, ``worker/coordination/lua``) and is read by
``lua_source``; ``coordination`` turns any Redis exception into
``CoordinationError``, so callers handle one type.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
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


class LuaScript:
    """A Lua script run by EVALSHA, sent whole (EVAL) until this process knows Redis has it.

    redis-py's registered script sends EVALSHA and, on a server that has not
    seen it, gets NOSCRIPT, loads it and sends EVALSHA again: three round
    trips per script per process. EVAL runs it and caches it in one. After a
    Redis restart EVALSHA meets NOSCRIPT once and EVAL runs it again.
    Passed a pipeline (``client=``), it leaves the loading to redis-py.
    """

    def __init__(self, client: redis.Redis, source: str) -> None:
        self._client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()  # noqa: S324 - the id Redis knows it by
        self._registered = client.register_script(source)
        self._loaded = False

    def __call__(
        self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None
    ) -> Any:
        if client is not None:
            return self._registered(keys=keys, args=args, client=client)
        if self._loaded:
            try:
                return self._client.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                pass  # Redis restarted or its scripts were flushed: send it whole
        reply = self._client.eval(self.source, len(keys), *keys, *args)
        self._loaded = True
        return reply

    def queue(self, pipe: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Add this script to a pipeline: whole the first time, by SHA1 after."""
        if self._loaded:
            pipe.evalsha(self.sha, len(keys), *keys, *args)
        else:
            pipe.eval(self.source, len(keys), *keys, *args)
            self._loaded = True


@dataclass(frozen=True)
class ScriptCall:
    """One script with its keys and arguments, to send with others."""

    script: LuaScript
    keys: list[str]
    args: list[Any]


def in_one_round_trip(
    client: redis.Redis, calls: Sequence[ScriptCall], *, reads: Sequence[str] = ()
) -> tuple[list[Any], list[Any]]:
    """Send scripts (then EXISTS of each key in ``reads``) in one pipeline.

    Returns the scripts' replies and the reads' answers. A script Redis lost
    (a restart) is run again alone, which loads it; redis-py's own pipeline
    of scripts would instead ask SCRIPT EXISTS on every execute, a second
    round trip each time. Not a transaction: each script is atomic on its
    own, as when sent one by one.
    """
    pipe = client.pipeline(transaction=False)
    for call in calls:
        call.script.queue(pipe, call.keys, call.args)
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


class TtlCounter:
    """Counters that expire ``ttl_s`` after their last count (``lua/count_with_ttl.lua``).

    The count and its expiry are one atomic script, so a count can also go in
    a pipeline with other scripts (``call``, ``in_one_round_trip``).
    """

    def __init__(self, client: redis.Redis) -> None:
        self._script = LuaScript(client, lua_source("worker.coordination", "count_with_ttl"))

    def call(self, key: str, *, ttl_s: float) -> ScriptCall:
        """Add one to ``key``, as a call to send with others; its reply is the new count."""
        return ScriptCall(self._script, [key], [max(1, math.ceil(ttl_s))])

    def count(self, key: str, *, ttl_s: float) -> int:
        """Add one to ``key``; the new count."""
        call = self.call(key, ttl_s=ttl_s)
        with coordination(f"count {key}"):
            return int(self._script(keys=call.keys, args=call.args))


def now_arg(clock: Clock | None) -> str:
    """ARGV[1] of every breaker script: empty (use Redis TIME) unless a test clock is set."""
    return "" if clock is None else repr(float(clock()))


def text(value: object) -> str:
    """Redis replies as str whether or not the client decodes responses."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)
