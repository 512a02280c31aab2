"""The baseline a team would build first: Celery autoretry, plain page numbers, no breaker.

``celery -A bench.naive_worker worker -Q naive`` with ``NAIVE_BROKER_URL``,
``NAIVE_DB`` (a SQLite file) and ``NAIVE_UPSTREAM_URL``. One task per
(connection, entity type) reads pages 1..last_page and upserts each page; any
exception retries the whole task with Celery's exponential backoff
(``autoretry_for=(Exception,)``, ``retry_backoff=True``, Celery's default
3 retries, jitter on). No classification, no breaker, no Retry-After, no
pause: a failed task's final failure raises one alert row, which is what an
``on_failure`` hook that pages someone would send.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Any

import httpx
from celery import Celery, Task

QUEUE = "naive"

app = Celery("naive_bench", broker=os.environ.get("NAIVE_BROKER_URL", "redis://127.0.0.1:6379/10"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
)

_local = threading.local()
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (connection_id TEXT, entity_type TEXT, key TEXT, data TEXT,
    synced_at REAL, PRIMARY KEY (connection_id, entity_type, key));
CREATE TABLE IF NOT EXISTS alerts (connection_id TEXT, entity_type TEXT, error TEXT, at REAL);
"""


def init_db(path: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)


def _db() -> sqlite3.Connection:
    if getattr(_local, "db", None) is None:
        _local.db = sqlite3.connect(os.environ["NAIVE_DB"], timeout=30)
    db: sqlite3.Connection = _local.db
    return db


def _http() -> httpx.Client:
    if getattr(_local, "http", None) is None:
        _local.http = httpx.Client(base_url=os.environ["NAIVE_UPSTREAM_URL"], timeout=30.0)
    client: httpx.Client = _local.http
    return client


class AlertOnFailure(Task):  # type: ignore[misc]
    """After the last retry, tell a person (one alert row per failed task)."""

    def on_failure(self, exc: Any, task_id: Any, args: Any, kwargs: Any, einfo: Any) -> None:
        db = _db()
        with db:
            db.execute(
                "INSERT INTO alerts VALUES (?, ?, ?, ?)",
                (
                    kwargs.get("connection_id"),
                    kwargs.get("entity_type"),
                    repr(exc)[:300],
                    time.time(),
                ),
            )


@app.task(name="naive.sync_connection")
def sync_connection(connection_id: str, token: str, entity_types: list[str]) -> None:
    for entity in entity_types:
        sync_entity.delay(connection_id=connection_id, token=token, entity_type=entity)


@app.task(
    name="naive.sync_entity",
    base=AlertOnFailure,
    autoretry_for=(Exception,),
    retry_backoff=True,
)
def sync_entity(connection_id: str, token: str, entity_type: str) -> int:
    client, db = _http(), _db()
    page, stored = 1, 0
    while True:
        response = client.get(
            f"/api/eam/{entity_type}",
            params={"page": page, "per_page": 100},
            headers={"Authorization": f"Bearer {token}"},
        )
        response.raise_for_status()
        body = response.json()
        now = time.time()
        with db:
            db.executemany(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                "data = excluded.data, synced_at = excluded.synced_at",
                [(connection_id, entity_type, r["key"], json.dumps(r), now) for r in body["data"]],
            )
        stored += len(body["data"])
        if page >= (body.get("meta") or {}).get("last_page", page):
            return stored
        page += 1
