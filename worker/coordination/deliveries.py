"""Count how often the broker hands out one message (same task id, same retry number).

A counter per delivery key that expires ``COUNT_TTL_S`` after its last count
(``scripts.TtlCounter``). ``count_call`` sends the count with the other calls
of a task's start (``sync.round_trips.begin_task``), so counting costs no round
trip of its own; ``count`` sends it alone, for a task that has no such start
(``sync_connection``). What a count past the limit means is in ``sync.poison``.
"""

from __future__ import annotations

import redis

from worker.coordination import redis_keys
from worker.coordination.scripts import ScriptCall, TtlCounter

COUNT_TTL_S = 86_400  # a day: a message redelivered later than that counts from one again


class Deliveries:
    """The delivery counters of one Redis database."""

    def __init__(self, client: redis.Redis) -> None:
        self._counter = TtlCounter(client)

    def count_call(self, task_id: str, retries: int) -> ScriptCall:
        """Count this delivery, as a call to send with others; its reply is the count."""
        return self._counter.call(redis_keys.deliveries(task_id, retries), ttl_s=COUNT_TTL_S)

    def count(self, task_id: str, retries: int) -> int:
        """Count this delivery; returns how many times the message was handed out."""
        return self._counter.count(redis_keys.deliveries(task_id, retries), ttl_s=COUNT_TTL_S)
