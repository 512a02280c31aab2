"""What a record costs beyond fetch and parse: each stage timed alone, in one thread.

The limit (section 1) fetches a page and parses its JSON. entity-sync also
reads each page exactly (``upstream/pagebody.py``), checks every record
(``sync/records.py``) and commits the page with its cursor and run progress
(``store/page_write.py``). Timed here one after another in this process, on
real pages from the sandbox, with no HTTP, Redis or Celery: the floor of
CPU per record that no change to the rest of the worker can remove.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from bench.common import fresh_store, median
from worker.store import Connection, PageCommit, RecordRow, Run, RunStatus, SqlStore, open_store
from worker.sync.records import split_records
from worker.timeutil import utc_now
from worker.upstream.pagebody import parse_list_body

REPEATS = 5


@dataclass
class Floor:
    """CPU µs per record of each stage (medians of ``REPEATS``)."""

    json_loads: float  # what the limit does to a page: json.loads
    exact_parse: float  # parse_list_body: the page read as docs/records.md says
    checks: float  # split_records: keys, timestamps, what to quarantine
    commit: dict[str, float]  # store kind -> commit_page
    records: int = 0  # how many records each stage handled

    def extra(self, kind: str) -> float:
        """CPU per record beyond the limit's parse: parse overhead, checks, the commit."""
        return self.exact_parse - self.json_loads + self.checks + self.commit[kind]


def _cpu_per_record(work: Callable[[], object], records: int) -> float:
    samples = []
    for _ in range(REPEATS):
        started = time.process_time()
        work()
        samples.append(time.process_time() - started)
    return median(samples) / records * 1e6


def _bodies(url: str, token: str, entity_type: str, per_page: int, pages: int) -> list[bytes]:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        return [
            client.get(
                f"/api/eam/{entity_type}", params={"per_page": per_page, "page": page}
            ).content
            for page in range(1, pages + 1)
        ]


def measure(url: str, token: str, entity_type: str, *, per_page: int, pages: int) -> Floor:
    """Time each stage on the first ``pages`` pages of one list of the sandbox at ``url``."""
    bodies = _bodies(url, token, entity_type, per_page, pages)
    pages = [parse_list_body(body) for body in bodies]
    records = sum(len(page.records) for page in pages)
    good = [split_records(page.records)[0] for page in pages]
    floor = Floor(
        json_loads=_cpu_per_record(lambda: [json.loads(b) for b in bodies], records),
        exact_parse=_cpu_per_record(lambda: [parse_list_body(b) for b in bodies], records),
        checks=_cpu_per_record(lambda: [split_records(p.records) for p in pages], records),
        commit={},
        records=records,
    )
    for kind in ("sqlite", "postgresql"):
        with fresh_store(kind, "floor") as spec:
            store = open_store(spec.url)
            insert = functools.partial(_insert_all, store, entity_type, good)
            floor.commit[kind] = _cpu_per_record(insert, records)
            store.drop_connection()
    return floor


def _insert_all(store: SqlStore, entity_type: str, pages: list[list[RecordRow]]) -> None:
    """Commit every page as a new connection's first run (inserts, as a first sync)."""
    connection_id = uuid.uuid4().hex
    store.add_connection(Connection(id=connection_id, name="floor", entity_types=(entity_type,)))
    run_id = str(uuid.uuid4())
    now = utc_now()
    store.start_run(
        Run(
            id=run_id,
            connection_id=connection_id,
            entity_type=entity_type,
            status=RunStatus.RUNNING,
            started_at=now,
            heartbeat_at=now,
        )
    )
    for records in pages:
        store.commit_page(
            PageCommit(
                connection_id=connection_id,
                entity_type=entity_type,
                run_id=run_id,
                records=tuple(records),
                quarantined=(),
                cursor=records[-1].updated_at,
            )
        )
