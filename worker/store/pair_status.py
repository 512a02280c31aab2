"""Each (connection, entity type) as status, the dashboard and /metrics read it.

One query over the counters kept with the data (``pair_counts``), the cursor
and each pair's last run by primary key; and how a ``runs`` row becomes a
``Run``. ``runs.SyncStore`` writes what these read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.store.base import translated
from worker.store.models import Connection, EntityStatus, Run
from worker.store.registry import RegistryStore

_RUN_COLUMNS = (
    "id, connection_id, entity_type, status, started_at, request_id, trigger, is_full, "
    "finished_at, pages, records, quarantined, tasks, error_kind, error_message, coalesced_into, "
    "heartbeat_at, queue, recoveries"
)

# Integers past int()'s 4,300 digits come back as Decimal instead of failing the read.


class PairStatusStore(RegistryStore):
    """Reads of every pair's counters, cursor and last run."""

    @translated
    def entity_statuses(self, connection_id: str | None = None) -> list[EntityStatus]:
        """Per (connection, entity type): counts, cursor, last run, last success."""
        connections = (
            [self.get_connection(connection_id)] if connection_id else self.list_connections()
        )
        run_columns = ", ".join(f"r.{c.strip()}" for c in _RUN_COLUMNS.split(","))
        by_pair = self._pair_rows(run_columns, connection_id)
        statuses = []
        for connection in connections:
            for entity in connection.entity_types:
                row = by_pair.get((connection.id, entity))
                if row is None:
                    statuses.append(EntityStatus(connection.id, entity, 0, 0, 0, None, None, None))
                    continue
                statuses.append(
                    EntityStatus(
                        connection_id=connection.id,
                        entity_type=entity,
                        records=int(row[2] or 0),
                        deleted=int(row[3] or 0),
                        quarantined=int(row[4] or 0),
                        cursor=row[6],
                        last_run=_run(row[9:]) if row[9] is not None else None,
                        last_success_at=row[5],
                        deleted_by_reconciliation=int(row[7] or 0),
                        last_reconciled_at=row[8],
                        held_deletions=int(row[-2] or 0),
                        reconcile_note=row[-1],
                    )
                )
        return statuses

    @translated
    def pair_rows(
        self, connections: Sequence[Connection], *, one: str | None = None
    ) -> list[PairRow]:
        """What status, the dashboard and /metrics show of every pair, as plain rows.

        ``entity_statuses`` without its objects, for the fleet at once: one row
        per entity type of each of ``connections`` (those of ``one`` only when
        given), in their order, from one query. See ``PairRow`` for the columns.
        """
        by_pair = self._pair_rows(_LAST_RUN_COLUMNS, one)
        empty = (0, 0, 0, None, None, 0, None, None, None, None, None, None, 0, None)
        out: list[PairRow] = []
        for connection in connections:
            cid = connection.id
            for entity in connection.entity_types:
                row = by_pair.get((cid, entity))
                out.append(row if row is not None else (cid, entity, *empty))  # type: ignore[arg-type]
        return out

    def _pair_rows(
        self, run_columns: str, connection_id: str | None
    ) -> dict[tuple[str, str], Sequence[Any]]:
        # One query over the counters kept with the data (schema versions 5 and
        # 9): never a scan of records, and each pair's last run is one primary-key
        # lookup from its counter row, never a search of the run history.
        where = "WHERE p.connection_id = ?" if connection_id else ""
        params = (connection_id,) if connection_id else ()
        rows = self._read(pair_rows_sql(run_columns, where), params)
        return {(row[0], row[1]): row for row in rows}


# PairRow columns: connection id, entity type, records (deletions included),
# deleted, quarantined, last success (finished at), cursor, keys deleted by
# reconciliation, last reconciled at, of the last run not skipped: status,
# started at, pages, error kind, error message; then deletions held for
# confirmation and the last full read's verdict when it marked nothing or held.
PairRow = tuple[
    str,
    str,
    int,
    int,
    int,
    str | None,
    str | None,
    int,
    str | None,
    str | None,
    str | None,
    int | None,
    str | None,
    str | None,
    int,
    str | None,
]
_LAST_RUN_COLUMNS = "r.status, r.started_at, r.pages, r.error_kind, r.error_message"


def pair_rows_sql(run_columns: str = _LAST_RUN_COLUMNS, where: str = "") -> str:
    """The one query behind ``pair_rows``: counters, cursor and the last run by primary key."""
    return (
        "SELECT p.connection_id, p.entity_type, p.live + p.deleted, p.deleted, "
        "p.quarantined, p.last_success_at, c.since, p.reconciled, p.reconciled_at, "
        f"{run_columns}, p.held, p.reconcile_note FROM pair_counts p "
        "LEFT JOIN cursors c ON c.connection_id = p.connection_id "
        "AND c.entity_type = p.entity_type "
        f"LEFT JOIN runs r ON r.id = p.last_run_id {where}"
    )


def _run(row: Sequence[Any]) -> Run:
    return Run(
        id=row[0],
        connection_id=row[1],
        entity_type=row[2],
        status=row[3],
        started_at=row[4],
        request_id=row[5],
        trigger=row[6],
        full=bool(row[7]),
        finished_at=row[8],
        pages=int(row[9]),
        records=int(row[10]),
        quarantined=int(row[11]),
        tasks=int(row[12]),
        error_kind=row[13],
        error_message=row[14],
        coalesced_into=row[15],
        heartbeat_at=row[16],
        queue=row[17],
        recoveries=int(row[18] or 0),
    )
