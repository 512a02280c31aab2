"""Count how often the broker hands out one message (same task id, same retry number).

A counter per delivery key that expires ``COUNT_TTL_S`` after its last count,
kept by one script (``lua/count_with_ttl.lua``). ``count_call`` sends the
count with the other calls of a task's start (``sync.task_edges.begin_task``), so
counting costs no round trip of its own; ``count`` sends it alone, for a task
that has no such start (``sync_connection``). What a count past the limit
means is in ``sync.poison``.
"""

from __future__ import annotations

import redis

from worker.coordination import redis_keys
from worker.coordination.scripts import LuaScript, ScriptCall, coordination, lua_source

COUNT_TTL_S = 86_400  # a day: a message redelivered later than that counts from one again

_PACKAGE = "worker.coordination"  # where lua/ is


class Deliveries:
    """The delivery counters of one Redis database."""

    def __init__(self, client: redis.Redis) -> None:
        self._count = LuaScript(client, lua_source(_PACKAGE, "count_with_ttl"))

    def count_call(self, task_id: str, retries: int) -> ScriptCall:
        """Count this delivery, as a call to send with others; its reply is the count."""
        return ScriptCall(self._count, [redis_keys.deliveries(task_id, retries)], [COUNT_TTL_S])

    def count(self, task_id: str, retries: int) -> int:
        """Count this delivery; returns how many times the message was handed out."""
        call = self.count_call(task_id, retries)
        with coordination(f"count delivery of {task_id}"):
            return int(self._count(keys=call.keys, args=call.args))
