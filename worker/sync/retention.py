"""Retention: keep the history tables as long as the settings say, and no longer.

Called by the housekeeping task ``entity_sync.housekeeping.prune_history``
(every 30 s). Finished runs are folded into the counters first, so the run
totals /metrics exports survive their rows; then each table is pruned in small
batches (``worker.store.retention``), a bounded amount per call.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from worker.settings import Settings
from worker.store.retention import Pruned, RetentionStore
from worker.timeutil import canonical

log = logging.getLogger("entity_sync.retention")


def prune_history(
    store: RetentionStore, settings: Settings, *, now: datetime | None = None
) -> Pruned:
    """Fold finished runs, then delete history past its retention; returns what went."""
    moment = now or datetime.now(UTC)
    started = time.monotonic()
    folded = store.fold_runs(batch=settings.retention_batch_size)
    pruned = store.prune_history(
        before=canonical(moment - timedelta(days=settings.history_retention_days)),
        dead_before=canonical(moment - timedelta(days=settings.dead_event_retention_days)),
        batch=settings.retention_batch_size,
    )
    if pruned.total or folded:
        log.info(
            "retention: folded %d finished runs; deleted %d runs, %d transitions, "
            "%d delivered and %d dead events, %d schedule log rows in %.2f s%s",
            folded,
            pruned.runs,
            pruned.transitions,
            pruned.events,
            pruned.dead_events,
            pruned.schedule_log,
            time.monotonic() - started,
            " (more next time)" if pruned.more else "",
        )
    return pruned
