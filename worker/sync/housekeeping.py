"""One housekeeping tick: every step that is due, in one task.

Beat sends ``entity_sync.housekeeping.tick`` every ``housekeeping_tick_seconds``
(5 s): one broker message, where one entry per step sent two every second
whether or not anything was due. Each step keeps its own cadence; a step is
due when its resting key in Redis has expired (``SET NX PX``), so two beats,
or a tick delivered twice, run a step at most once per period. Every step is
idempotent anyway (worker/sync/recovery.py, worker/sync/schedule.py).

A step that fails is logged and the others still run; it is due again at the
next tick.

To add a step (retention pruning, for one), append a ``Step`` to the table the
tick task builds (tasks/schedule.py ``STEPS``): a name, a period, a function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from worker.coordination import redis_keys
from worker.coordination.lease import Lock
from worker.logs import log


@dataclass(frozen=True)
class Step:
    """One responsibility of housekeeping and how often it runs (0: every tick)."""

    name: str
    every_s: float
    run: Callable[[], Any]


def due(client: redis.Redis, step: Step) -> bool:
    """Claim this step's period; False while it rests (another tick ran it)."""
    if step.every_s <= 0:
        return True
    key = redis_keys.housekeeping_step(step.name)
    # A little less than the period: a tick that arrives a moment early must
    # not make the step skip a whole period.
    rest_s = max(0.001, step.every_s - 0.5)
    return Lock(client, ttl_s=rest_s).claim(key)


def tick(client: redis.Redis, steps: Sequence[Step]) -> dict[str, Any]:
    """Run every due step; returns what each did (or its error) by name."""
    done: dict[str, Any] = {}
    for step in steps:
        try:
            if not due(client, step):
                continue
            done[step.name] = step.run()
        except Exception as exc:
            log.exception("housekeeping step %s failed", step.name)
            done[step.name] = f"error: {exc}"
    return done
