"""SqlStore: the SQL truth, one class over the store's parts.

One class serves SQLite and PostgreSQL (``dialects.py`` holds what differs),
put together from one module per concept: ``registry`` (connections),
``runs`` (runs, records, cursors, quarantine), ``parking`` (deferred jobs),
``outbox`` (transitions and events), ``inbound`` (webhooks the upstream
sends), ``upstream_ids`` (which connection an upstream id names), ``totals``
(aggregates for monitoring), ``retention`` (pruning old history), on ``base``
(connections, transactions); ``runs`` builds on ``run_end`` (what a run's end
writes: deletions found by a complete read, the opt-in sync events).
Every write that belongs together runs in one transaction, above all a page's
records with the cursor that follows them (principle 2). Database exceptions
never escape: they become StoreError, and the broken connection is dropped so
the next call reconnects (a restarted PostgreSQL costs one failed call).
"""

from __future__ import annotations

from worker.store.inbound import InboundStore
from worker.store.outbox import OutboxStore
from worker.store.parking import ParkingStore
from worker.store.retention import RetentionStore
from worker.store.runs import SyncStore
from worker.store.totals import TotalsStore
from worker.store.upstream_ids import UpstreamIdStore


class SqlStore(
    SyncStore,
    ParkingStore,
    OutboxStore,
    TotalsStore,
    RetentionStore,
    InboundStore,
    UpstreamIdStore,
):
    """Connections, synced data, run history, parked jobs, the outbox and their totals."""
