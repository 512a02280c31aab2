"""Count how often the broker hands out one message, to stop poison jobs.

A task that kills its worker is requeued (``task_reject_on_worker_lost``) and
would kill the next one, for ever. Each delivery of a message (same task id,
same retry number) is counted in Redis; past ``max_deliveries`` the job is
dead-lettered with its reason instead of being run again.
"""

from __future__ import annotations

import redis

from worker.coordination import redis_keys
from worker.resilience.limits import count_with_ttl

COUNT_TTL_S = 86_400


def count_delivery(client: redis.Redis, task_id: str, retries: int) -> int:
    """Count this delivery; returns how many times the message was handed out."""
    return count_with_ttl(client, redis_keys.deliveries(task_id, retries), ttl_s=COUNT_TTL_S)
