"""The periodic reconciliation: the scheduler makes a sync a full read when one is due.

A real worker with its embedded beat, the sandbox over HTTP, both stores; and
the operator commands that set the interval and the opt-in events.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.testing.sandbox import SandboxHandle, running_sandbox
from tests.support import Env, WorkerProcess, wait_for
from worker.store import Connection, Run, RunStatus, open_store
from worker.sync.reconciliation import reconciliation_due
from worker.sync.schedule import offset_s
from worker.timeutil import parse_instant, utc_now

pytestmark = pytest.mark.integration

WEEK = 7 * 86_400


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(preset="empty") as handle:
        yield handle


def test_a_reconciliation_is_due_per_interval_from_the_oldest_full_read(store_url: str) -> None:
    store = open_store(store_url)
    store.add_connection(Connection(id="c", name="c", entity_types=("assets", "sites")))
    connection = store.get_connection("c")
    added = parse_instant(connection.created_at)

    def full_read(entity: str, status: RunStatus) -> str:
        run_id = str(uuid.uuid4())
        now = utc_now()
        store.start_run(
            Run(id=run_id, connection_id="c", entity_type=entity, status=RunStatus.RUNNING,
                started_at=now, full=True)
        )  # fmt: skip
        store.finish_run(run_id, status)
        run = store.get_run(run_id)
        assert run is not None and run.finished_at is not None
        return run.finished_at

    def due(after_s: float, own: object = None) -> bool:
        return reconciliation_due(
            store,
            connection,
            own_interval_s=own,
            default_interval_s=WEEK,
            now=added + timedelta(seconds=after_s),
        )

    # A new connection is first due at its stable offset into the first interval.
    first = offset_s("c", WEEK)
    assert (first == 0 or not due(first - 1)) and due(first)
    hourly = offset_s("c", 3600)
    assert (hourly == 0 or not due(hourly - 1, own=3600)) and due(hourly, own=3600)
    assert due(first, own=0)  # an unusable stored value falls back to the default
    # A full read of one entity type does not cover the other.
    full_read("assets", RunStatus.SUCCEEDED)
    assert due(max(first, WEEK))
    ended = full_read("sites", RunStatus.SUCCEEDED)
    since_full = (parse_instant(ended) - added).total_seconds()
    assert not due(since_full + WEEK - 60) and due(since_full + WEEK)
    # A failed full read is no reconciliation.
    full_read("sites", RunStatus.FAILED)
    assert not due(since_full + WEEK - 60)


def test_the_scheduler_reconciles_on_the_connections_interval(
    store_url: str,
    sandbox: SandboxHandle,
    test_redis: Any,
    worker_factory: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    token = f"tok-{uuid.uuid4().hex[:10]}"
    sandbox.put_connection(token, {"seed": 31, "sizes": {"assets": 120}})
    env = Env(
        store_url=store_url,
        upstream_url=sandbox.url,
        ENTITY_SYNC_SCHEDULE_ENABLED="true",
        ENTITY_SYNC_SYNC_INTERVAL_SECONDS="1",
    )
    env.add_connection("acme", token, ("assets",))
    set_every = env.cli("connections", "reconcile", "acme", "--every", "6")
    assert set_every.returncode == 0, set_every.stderr
    assert "every 6s" in set_every.stdout
    store = env.store()
    worker = WorkerProcess(env, tmp_path / "w.log").start()
    worker_factory.append(worker)

    def live() -> set[str]:
        return {r.key for r in store.records("acme", "assets") if r.deleted_at is None}

    wait_for(lambda: len(live()) == 120, 60, "the first scheduled sync", worker)
    removed = set(sandbox.mutate(token, hard_deletes=4, entities=["assets"])["assets"]["removed"])
    wait_for(
        lambda: set(store.deletions("acme", "assets")) == removed, 60, "a reconciliation", worker
    )
    full = [r for r in store.recent_runs(limit=200) if r.full and r.status == "succeeded"]
    assert full and all(r.trigger == "scheduled" for r in full)
    assert sum(store.run_changes(r.id)["reconciled"] for r in full) == 4
    assert live() == {r["key"] for r in sandbox.truth(token, "assets")}
    # Most scheduled syncs stay incremental.
    scheduled = [r for r in store.recent_runs(limit=200) if r.trigger == "scheduled"]
    assert len(scheduled) > len(full)


def test_the_operator_commands_check_and_show_their_settings(tmp_path: Path) -> None:
    env = Env(
        store_url=f"sqlite:///{tmp_path}/store.db",
        upstream_url="http://127.0.0.1:9",
        ENTITY_SYNC_WEBHOOK_ALLOW_HTTP="true",
        ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE="true",
    )
    assert env.cli("connections", "add", "c").returncode == 0
    url = "http://127.0.0.1:9/hooks"
    for bad, message in (
        ("sync.started", "unknown event type"),
        ("connection.recovered", "always delivered"),
        ("", "name at least one"),
    ):
        refused = env.cli("connections", "set-webhook", "c", url, "--events", bad)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert env.store().get_connection("c").webhook_url is None  # nothing saved
    chosen = env.cli("connections", "set-webhook", "c", url, "--events", "sync.completed")
    assert chosen.returncode == 0 and "sync.completed" in chosen.stdout, chosen.stderr
    kept = env.cli("connections", "set-webhook", "c", url)  # --events omitted: unchanged
    assert "sync.completed" in kept.stdout
    shown = json.loads(env.cli("connections", "show", "c").stdout)
    assert shown["webhook_events"] == ["sync.completed"]
    assert shown["reconcile_interval_s"] is None
    cleared = env.cli("connections", "set-webhook", "c", url, "--events", "none")
    assert "no opt-in events" in cleared.stdout

    for bad_every in ("0", "-5", str(400 * 86_400)):
        refused = env.cli("connections", "reconcile", "c", "--every", bad_every)
        assert refused.returncode == 2 and "--every" in refused.stderr
    assert env.cli("connections", "reconcile", "c", "--every", "3600").returncode == 0
    assert json.loads(env.cli("connections", "show", "c").stdout)["reconcile_interval_s"] == 3600
    back = env.cli("connections", "reconcile", "c", "--default")
    assert back.returncode == 0 and "the default (604800s)" in back.stdout
    assert env.cli("connections", "reconcile", "nope").returncode == 2
