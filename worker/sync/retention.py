"""Retention: keep the history tables as long as the settings say, and no longer.

Called by the housekeeping task ``entity_sync.housekeeping.prune_history``
(every 30 s). Finished runs are folded into the counters first, so the run
totals /metrics exports survive their rows; then each table is pruned in small
batches (``worker.store.retention``), a bounded amount per call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from worker.settings import Settings
from worker.store import SqlStore
from worker.store.retention import Pruned
from worker.timeutil import canonical

log = logging.getLogger("entity_sync.retention")


def prune_history(store: SqlStore, settings: Settings, *, now: datetime | None = None) -> Pruned:
    """Fold finished runs, then delete history past its retention; returns what went."""
    moment = now or datetime.now(UTC)
    started = time.monotonic()
    folded = store.fold_runs(batch=settings.retention_batch_size)
    pruned = store.prune_history(
        before=canonical(moment - timedelta(days=settings.history_retention_days)),
        dead_before=canonical(moment - timedelta(days=settings.dead_event_retention_days)),
        batch=settings.retention_batch_size,
    )
    bounds = upstream_bounds(settings, moment)
    upstream = store.prune_upstream(
        processed_before=bounds.processed_before,
        unmapped_before=bounds.unmapped_before,
        future_after=bounds.future_after,
        batch=settings.retention_batch_size,
    )
    pruned = replace(pruned, upstream_events=upstream.events, more=pruned.more or upstream.more)
    if pruned.total or folded or upstream.aspects:
        log.info(
            "retention: folded %d finished runs; deleted %d runs, %d transitions, "
            "%d delivered and %d dead events, %d schedule log rows, %d upstream events "
            "and %d upstream aspects in %.2f s%s",
            folded,
            pruned.runs,
            pruned.transitions,
            pruned.events,
            pruned.dead_events,
            pruned.schedule_log,
            pruned.upstream_events,
            upstream.aspects,
            time.monotonic() - started,
            " (more next time)" if pruned.more else "",
        )
    return pruned


@dataclass(frozen=True)
class UpstreamBounds:
    """The instants ``prune_upstream`` deletes before (aspects: also after ``future_after``)."""

    processed_before: str
    unmapped_before: str
    future_after: str


def upstream_bounds(settings: Settings, moment: datetime) -> UpstreamBounds:
    """Where ``prune_upstream`` cuts at ``moment``.

    No event id goes before the receiver's freshness window plus its skew have
    passed since it arrived: the receiver refuses an event created longer ago
    than the window and accepts one at most the skew ahead, so an id that is
    gone can only come back too old to be accepted (a replay stays refused).
    """
    window = timedelta(
        seconds=settings.upstream_event_max_age_seconds
        + settings.upstream_event_future_skew_seconds
    )
    remembered = moment - window
    history = moment - timedelta(days=settings.history_retention_days)
    unmapped = moment - timedelta(seconds=settings.upstream_unmapped_retention_seconds)
    return UpstreamBounds(
        processed_before=canonical(min(history, remembered)),
        unmapped_before=canonical(min(unmapped, remembered)),
        future_after=canonical(
            moment + timedelta(seconds=settings.upstream_event_future_skew_seconds)
        ),
    )
