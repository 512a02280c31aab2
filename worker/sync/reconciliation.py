"""When a scheduled sync should be a full read: the periodic reconciliation.

Records a source deletes for real (no ``deletedAt``) only show as missing
from a complete read. A successful full run marks them deleted
(``worker/store/run_end.py``); this module decides when the scheduler asks
for one: when any entity type of the connection has had no successful full
read for its interval (``connections reconcile ID --every S``, else
``ENTITY_SYNC_RECONCILE_INTERVAL_SECONDS``, a week). The end of each pair's
last one is kept with its counters (``pair_counts.reconciled_at``), out of
reach of the pruning of old runs. A pair never reconciled is first due at a
stable point of its first interval after the connection was added (the
scheduler's per-connection offset), so connections added together, or a
whole registry upgraded to this version, do not all read in full at once.
A pair with held deletions is due again after the confirmation delay.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from worker.operator_input import usable_reconcile_interval
from worker.store import Connection, SqlStore
from worker.sync.schedule import offset_s
from worker.timeutil import parse_instant


def reconciliation_due(
    store: SqlStore,
    connection: Connection,
    *,
    own_interval_s: object,
    default_interval_s: int,
    now: datetime,
    confirm_after_s: int | None = None,
) -> bool:
    """Whether the connection's next scheduled sync should read everything.

    Deletions held by the mass-deletion guard (``worker/store/held_deletions.py``)
    need a later complete read to be applied: with ``confirm_after_s``, a pair
    holding some is due that long after its last full read, however long its
    interval.
    """
    interval = usable_reconcile_interval(own_interval_s) or default_interval_s
    if not connection.entity_types:
        return False
    marks = store.last_full_reads(connection.id)
    last = {entity: ended for entity, (ended, _) in marks.items()}
    if confirm_after_s is not None and any(
        held is not None and (now - parse_instant(ended)).total_seconds() >= confirm_after_s
        for ended, held in marks.values()
    ):
        return True
    # Never reconciled: as if the last one had been one interval before a
    # stable point of the connection's first interval.
    never = parse_instant(connection.created_at) + timedelta(
        seconds=offset_s(connection.id, interval) - interval
    )
    oldest = min(
        parse_instant(last[entity]) if entity in last else never
        for entity in connection.entity_types
    )
    return (now - oldest).total_seconds() >= interval
