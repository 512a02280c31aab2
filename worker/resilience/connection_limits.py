"""Per-connection rate and concurrency overrides: kept in the store, applied in Redis.

The store holds the durable copy (principle 1); Redis holds the copy the
admission script reads. ``apply_limits`` copies one to the other, and the
housekeeping probe re-applies every connection's, so a flushed Redis forgets
them for one probe interval at most. The caller reads the connections
(``StoredLimits`` is what this module needs of one), so the policy layer
never reads the store. A stored value out of range (the CLI refuses one, but
a row may be edited by hand or come from an older release) falls back to the
default for its own connection and is logged: it never stops the others'
limits or probes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from worker.logs import connection_log
from worker.operator_input import usable_limits
from worker.resilience.limits import Limits


class StoredLimits(Protocol):
    """A connection's stored overrides, as the caller read them (``store.Connection``)."""

    @property
    def id(self) -> str: ...
    @property
    def rate_per_second(self) -> float | None: ...
    @property
    def rate_burst(self) -> int | None: ...
    @property
    def max_concurrency(self) -> int | None: ...


def apply_limits(limits: Limits, connections: Iterable[StoredLimits]) -> int:
    """Write each connection's overrides to Redis; returns how many were written."""
    written = 0
    for connection in connections:
        values, problems = usable_limits(
            connection.rate_per_second, connection.rate_burst, connection.max_concurrency
        )
        if problems:
            connection_log.warning(
                "stored limits out of range, the default applies instead: %s",
                ", ".join(problems),
                extra={"connection_id": connection.id},
            )
        try:
            limits.set_connection_limits(
                connection.id,
                rate_per_s=values.rate_per_second,
                burst=values.rate_burst,
                max_concurrency=values.max_concurrency,
            )
        except ValueError as exc:
            # One connection's limits must not keep the others' from being applied.
            connection_log.warning(
                "limits not applied: %s", exc, extra={"connection_id": connection.id}
            )
            continue
        written += 1
    return written
