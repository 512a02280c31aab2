"""Runtime state of one connection: its data, counters, mutations and faults."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.sandbox.clock import format_instant, now_us
from harness.sandbox.config import ConnectionSpec, MutationBatch
from harness.sandbox.records import Record, RecordFactory, generate
from harness.sandbox.scenarios import FaultState, offline_now
from harness.sandbox.table import EntityTable
from worker.entities import ALL_ENTITY_TYPES, EntityType


@dataclass(frozen=True)
class ListQuery:
    """A validated list request."""

    page: int
    per_page: int
    gteq: int | None
    lt: int | None
    descending: bool


@dataclass(frozen=True)
class Page:
    """One computed page and the size of the filtered set it came from."""

    records: list[Record]
    total: int


class Connection:
    """One connection. ``lock`` guards everything; data is generated on first access."""

    def __init__(self, spec: ConnectionSpec, data_end_us: int) -> None:
        self.spec = spec
        self.lock = threading.RLock()
        self.faults = FaultState(spec.scenarios, spec.seed)
        self._data_end_us = data_end_us
        self._sizes = {e: spec.size_of(e) for e in ALL_ENTITY_TYPES}
        self._tables: dict[EntityType, EntityTable] = {}
        self._ties = random.Random(f"{spec.seed}:ties")
        self._mutation_rng = random.Random(f"{spec.seed}:mutations")
        self._served_pages = 0
        self.last_timed_mutation = time.monotonic()
        self.sync_updated_at = format_instant(data_end_us)
        # Sends one of the unified API's webhooks (set by the Sandbox when it has a target).
        self.emit: Callable[[str, dict[str, Any]], None] | None = None
        self._offline_reported = False

    def webhook(self, switch: str, event_type: str, data: dict[str, Any]) -> None:
        """Send a webhook if this connection's spec switches this kind on."""
        if self.emit is not None and switch in self.spec.webhooks:
            self.emit(event_type, data)

    def table(self, entity: EntityType) -> EntityTable:
        """The entity type's table, generated deterministically on first use."""
        with self.lock:
            table = self._tables.get(entity)
            if table is None:
                records, stamps = generate(entity, self.spec.seed, self._sizes, self._data_end_us)
                table = EntityTable(RecordFactory(entity, self._sizes), records, stamps)
                self._tables[entity] = table
            return table

    def list_page(
        self, entity: EntityType, query: ListQuery, only: Callable[[str], bool] | None = None
    ) -> Page:
        """Compute one page now (no snapshots), then apply a due request-driven mutation.

        ``only`` serves just the keys it keeps (a lagging replica, ``lies.py``):
        pages and ``total`` are then those of that subset.
        """
        with self.lock:
            table = self.table(entity)
            window = table.window(query.gteq, query.lt, only)
            shuffle = self._ties if self.spec.tie_order == "shuffled" else None
            records = table.page(
                window,
                (query.page - 1) * query.per_page,
                query.per_page,
                descending=query.descending,
                shuffle=shuffle,
            )
            self._served_pages += 1
            mutation = self.spec.mutation
            if (
                mutation is not None
                and mutation.every_requests is not None
                and self._served_pages % mutation.every_requests == 0
            ):
                self.mutate(mutation, mutation.entities or [entity])
            return Page(records, window.total)

    def mutate(
        self, batch: MutationBatch, entities: list[EntityType] | None = None
    ) -> dict[str, Any]:
        """Apply one batch to each entity type atomically; returns what changed, by type."""
        chosen = entities or batch.entities or list(ALL_ENTITY_TYPES)
        summary: dict[str, Any] = {}
        with self.lock:
            for entity in chosen:
                summary[entity.value] = self._mutate_table(self.table(entity), batch)
            self.sync_updated_at = format_instant(now_us())
        self.webhook(
            "sync",
            "sync.completed",
            {"entity_types": [e.value for e in chosen], "sync_status": "done"},
        )
        return summary

    def _mutate_table(self, table: EntityTable, batch: MutationBatch) -> dict[str, Any]:
        rng = self._mutation_rng
        # Each stamp is the wall clock, nudged past the newest record when the
        # clock lags, so an update always moves a record to the end.
        updated = [
            table.update(k, table.next_stamp(now_us()), rng)["key"]
            for k in table.pick_live(rng, batch.updates)
        ]
        deleted = [
            table.delete(k, table.next_stamp(now_us()))["key"]
            for k in table.pick_live(rng, batch.deletes)
        ]
        removed = table.pick_any_live(rng, batch.hard_deletes)
        for key in removed:
            table.remove(key)
        inserted = [
            table.insert(table.next_stamp(now_us()), rng)["key"] for _ in range(batch.inserts)
        ]
        bulk_stamp = table.next_stamp(now_us())
        bulk = [table.insert(bulk_stamp, rng)["key"] for _ in range(batch.bulk_import)]
        return {
            "updated": updated,
            "deleted": deleted,
            "removed": removed,
            "inserted": inserted,
            "bulk": bulk,
            "bulk_updatedAt": format_instant(bulk_stamp) if bulk else None,
        }

    def tick(self, now: float) -> None:
        """Apply the time-driven mutation when it is due, and tell a change of an
        offline scenario's window (called by the ticker thread)."""
        if "status" in self.spec.webhooks:
            with self.lock:
                offline = offline_now(self.faults)
                changed = offline != self._offline_reported
                self._offline_reported = offline
            if changed:
                status = "offline" if offline else "online"
                self.webhook("status", "connection.status_changed", {"status": status})
        mutation = self.spec.mutation
        if mutation is None or mutation.every_seconds is None:
            return
        with self.lock:
            if now - self.last_timed_mutation >= mutation.every_seconds:
                self.last_timed_mutation = now
                self.mutate(mutation)

    def truth(self, entity: EntityType) -> list[Record]:
        """Every current record of an entity type, deleted ones included."""
        with self.lock:
            return self.table(entity).all_records()
