"""Retention deletes old history in batches and never what is still live (both stores)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from worker.events import Event
from worker.settings import Settings
from worker.store import Connection, Run, RunStatus, SqlStore, TransitionRecord, open_store
from worker.sync.retention import prune_history
from worker.timeutil import canonical

pytestmark = pytest.mark.integration

NOW = datetime(2026, 6, 1, tzinfo=UTC)
OLD = canonical(NOW - timedelta(days=30))
OLDER = canonical(NOW - timedelta(days=31))
ANCIENT = canonical(NOW - timedelta(days=200))
RECENT = canonical(NOW - timedelta(days=1))


@pytest.fixture
def store(store_url: str) -> SqlStore:
    store = open_store(store_url)
    store.add_connection(Connection(id="c1", name="n", entity_types=("assets", "sites")))
    return store


def _settings(**overrides: object) -> Settings:
    return Settings(
        history_retention_days=14,
        dead_event_retention_days=90,
        retention_batch_size=10,
        **overrides,  # type: ignore[arg-type]
    )


def _run(run_id: str, status: str, at: str, entity: str = "assets", **fields: object) -> Run:
    finished = None if status in ("queued", "running", "deferred") else at
    return Run(
        id=run_id,
        connection_id="c1",
        entity_type=entity,
        status=status,  # type: ignore[arg-type]
        started_at=at,
        finished_at=finished,
        **fields,  # type: ignore[arg-type]
    )


def _ids(store: SqlStore) -> set[str]:
    return {row[0] for row in store._read("SELECT id FROM runs")}


def test_old_runs_go_in_batches_but_live_and_latest_runs_stay(store: SqlStore) -> None:
    for i in range(35):  # more than three batches of old, finished runs
        store.record_run(
            _run(f"old-{i:02}", "failed", canonical(NOW - timedelta(days=40, minutes=i)))
        )
    store.record_run(_run("last-success", "succeeded", OLDER))
    store.record_run(_run("last-run", "failed", OLD))
    store.record_run(_run("skipped-after", "skipped", OLD))  # not what status shows
    store.record_run(_run("stuck-queued", "queued", ANCIENT))
    store.record_run(_run("stuck-running", "running", ANCIENT))
    store.record_run(_run("parked", "deferred", ANCIENT))
    store.record_run(_run("recent", "succeeded", RECENT, entity="sites"))
    store.record_run(
        Run(
            id="rejected",
            connection_id=None,
            entity_type=None,
            status=RunStatus.REJECTED,
            started_at=OLD,
            finished_at=OLD,
        )
    )
    before = store.totals()

    pruned = prune_history(store, _settings(), now=NOW)

    assert pruned.runs == 35 + 1 + 1  # the old ones, the old skipped one, the rejected one
    assert _ids(store) == {
        "last-success",
        "last-run",
        "stuck-queued",
        "stuck-running",
        "parked",
        "recent",
    }
    # The status still shows the pair's last run and last success.
    status = {s.entity_type: s for s in store.entity_statuses("c1")}
    assert status["assets"].last_run is not None and status["assets"].last_run.id == "last-run"
    assert status["assets"].last_success_at == OLDER
    # Counters exported as Prometheus counters never go down.
    after = store.totals()
    assert _runs(after) == _runs(before)
    assert after.failures == before.failures
    assert prune_history(store, _settings(), now=NOW).total == 0


def _runs(totals: object) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for t in totals.runs:  # type: ignore[attr-defined]
        key = (t.connection_id, t.status)
        out[key] = out.get(key, 0) + t.runs
    return {k: v for k, v in out.items() if v}


def _transition(to_state: str, at: str, entity: str | None = None) -> TransitionRecord:
    return TransitionRecord("c1", entity, "x", to_state, "r", None, at)


def test_transitions_keep_the_latest_and_the_current_unhealthy_streak(store: SqlStore) -> None:
    for state in ("open", "closed", "open", "closed"):
        store.record_transition(_transition(state, ANCIENT))
    store.record_transition(_transition("open", OLDER))  # still open since then
    store.record_transition(_transition("half-open", OLD))
    for state in ("blocked", "closed", "blocked"):
        store.record_transition(_transition(state, OLD, entity="assets"))
    before = {(t.level, t.from_state, t.to_state): t.count for t in store.totals().transitions}
    unhealthy = store.unhealthy_since("c1")

    pruned = prune_history(store, _settings(), now=NOW)

    assert pruned.transitions == 3 + 2  # connection: up to the last closed; assets: all but one
    assert store.unhealthy_since("c1") == unhealthy == OLDER
    left = [(t.entity_type, t.to_state) for t in sorted(store.transitions("c1"), key=_by_id)]
    assert left == [(None, "closed"), (None, "open"), (None, "half-open"), ("assets", "blocked")]
    after = {(t.level, t.from_state, t.to_state): t.count for t in store.totals().transitions}
    assert after == before


def _by_id(transition: TransitionRecord) -> int:
    return transition.id


def _event(event_id: str, at: str, status: str, entity: str | None = None) -> Event:
    return Event(
        id=event_id,
        type="connection.recovered" if entity is None else "entity.access_lost",
        connection_id="c1",
        entity_type=entity,
        created_at=at,
        body_json=json.dumps({"id": event_id}),
        status=status,
    )


def _insert_event(store: SqlStore, event: Event) -> None:
    with store._write() as tx:
        tx.execute(
            "INSERT INTO events (id, type, connection_id, entity_type, created_at, body, status, "
            "next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.id,
                event.type,
                event.connection_id,
                event.entity_type,
                event.created_at,
                event.body_json,
                event.status,
                event.created_at,
            ),
        )


def test_events_pending_and_latest_stay_dead_kept_longer(store: SqlStore) -> None:
    for event in (
        _event("delivered-old", ANCIENT, "delivered"),
        _event("dead-ancient", ANCIENT, "dead"),
        _event("dead-old", OLD, "dead"),  # younger than the dead events' 90 days
        _event("pending-old", ANCIENT, "pending"),  # never deleted, whatever its age
        _event("delivered-old-2", OLD, "delivered"),
        _event("latest-of-connection", OLD, "delivered"),
        _event("latest-of-assets", ANCIENT, "delivered", entity="assets"),
    ):
        _insert_event(store, event)

    pruned = prune_history(store, _settings(), now=NOW)

    assert (pruned.events, pruned.dead_events) == (2, 1)
    left = {row[0] for row in store._read("SELECT id FROM events")}
    assert left == {"dead-old", "pending-old", "latest-of-connection", "latest-of-assets"}
    # The de-duplication still sees each subject's latest event.
    assert store.last_event_type("c1", None) == "connection.recovered"
    assert store.last_event_type("c1", "assets") == "entity.access_lost"


def test_schedule_log_is_pruned_by_age(store: SqlStore) -> None:
    with store._write() as tx:
        tx.executemany(
            "INSERT INTO schedule_log (connection_id, slot, outcome, at) VALUES (?, ?, ?, ?)",
            [("c1", slot, "enqueued", OLD if slot < 25 else RECENT) for slot in range(30)],
        )
    pruned = prune_history(store, _settings(), now=NOW)
    assert pruned.schedule_log == 25
    assert [slot for _, slot, _ in store.schedule_log("c1")] == list(range(25, 30))


def test_upstream_webhook_events_go_once_processed_and_old(store: SqlStore) -> None:
    rows = [
        ("applied-old", "applied", OLD),
        ("ignored-old", "ignored", OLD),
        ("stale-old", "stale", OLD),
        ("applied-recent", "applied", RECENT),
        ("received-ancient", "received", ANCIENT),  # never processed: kept whatever its age
        ("unmapped-hours", "unmapped", canonical(NOW - timedelta(hours=3))),
        ("unmapped-old", "unmapped", OLD),  # past the unknown connections' day
        ("unmapped-ancient", "unmapped", ANCIENT),
    ]
    _upstream_rows(store, rows)
    pruned = prune_history(store, _settings(), now=NOW)
    assert pruned.upstream_events == 5
    left = {row[0] for row in store._read("SELECT id FROM upstream_events")}
    assert left == {"applied-recent", "received-ancient", "unmapped-hours"}


def test_an_upstream_event_id_outlives_the_freshness_window_whatever_the_retention(
    store: SqlStore,
) -> None:
    """Issue 19, finding 3: a pruned id let a captured event be accepted again. However
    short the retention settings, an id stays while a replay of it could be fresh."""
    now = datetime.now(UTC)
    window = timedelta(hours=2)
    rows = [
        # Arrived 3 h ago: created at most the skew (5 min) later, so older than the
        # 2 h window by now; a replay would be refused as stale. It may go.
        ("applied-3h", "applied", canonical(now - timedelta(hours=3))),
        ("unmapped-3h", "unmapped", canonical(now - timedelta(hours=3))),
        # Arrived 1 h ago: a replay is still inside the window. It must stay.
        ("applied-1h", "applied", canonical(now - timedelta(hours=1))),
        ("unmapped-1h", "unmapped", canonical(now - timedelta(hours=1))),
    ]
    _upstream_rows(store, rows)
    settings = Settings(
        history_retention_days=0.001,  # 86 s
        dead_event_retention_days=0.001,
        upstream_unmapped_retention_seconds=60,
        upstream_event_max_age_seconds=window.total_seconds(),
        upstream_event_future_skew_seconds=300,
    )
    assert prune_history(store, settings, now=now).upstream_events == 2
    left = {row[0] for row in store._read("SELECT id FROM upstream_events")}
    assert left == {"applied-1h", "unmapped-1h"}


def test_upstream_aspects_dated_in_the_future_or_long_ago_are_pruned(store: SqlStore) -> None:
    """Issue 19, finding 3: an aspect dated years ahead (kept before the receiver bounded
    the future) held the connection's ordering slot for good."""
    now = datetime.now(UTC)
    aspects = [
        ("c1", "sync", canonical(now + timedelta(days=365 * 70))),  # the forged future
        ("c1", "auth", canonical(now - timedelta(days=30))),  # past the history's period
        ("c1", "error", canonical(now - timedelta(minutes=5))),  # current
        ("c1", "availability", canonical(now + timedelta(seconds=30))),  # within the skew
    ]
    with store._write() as tx:
        tx.executemany(
            "INSERT INTO upstream_aspects (connection_id, aspect, event_id, event_type, "
            "created_at, applied_at) VALUES (?, ?, 'e-' || ?, 'sync.completed', ?, ?)",
            [(c, a, a, at, canonical(now)) for c, a, at in aspects],
        )
    prune_history(store, _settings(), now=now)
    assert {a.aspect for a in store.upstream_aspects("c1")} == {"error", "availability"}


def _upstream_rows(store: SqlStore, rows: list[tuple[str, str, str]]) -> None:
    with store._write() as tx:
        tx.executemany(
            "INSERT INTO upstream_events (id, type, upstream_connection_id, created_at,"
            " received_at, body, status) VALUES (?, 'sync.completed', 'u1', ?, ?, '{}', ?)",
            [(event_id, at, at, status) for event_id, status, at in rows],
        )


def test_a_prune_does_a_bounded_amount_of_work_per_call(store: SqlStore) -> None:
    with store._write() as tx:
        tx.executemany(
            "INSERT INTO schedule_log (connection_id, slot, outcome, at) VALUES (?, ?, ?, ?)",
            [("c1", slot, "enqueued", OLD) for slot in range(50)],
        )
    first = store.prune_history(before=RECENT, dead_before=RECENT, batch=10, max_batches=2)
    assert (first.schedule_log, first.more) == (20, True)
    rest = store.prune_history(before=RECENT, dead_before=RECENT, batch=10, max_batches=10)
    assert (rest.schedule_log, rest.more) == (30, False)


def test_dead_events_must_be_kept_at_least_as_long() -> None:
    with pytest.raises(ValueError, match="DEAD_EVENT_RETENTION_DAYS"):
        Settings(history_retention_days=30, dead_event_retention_days=7)


def test_the_housekeeping_task_prunes_on_beat_s_schedule(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.schedule as housekeeping
    from worker.celeryapp.app import BEAT_SCHEDULE, app
    from worker.jobs import HOUSEKEEPING_TICK, PRUNE_HISTORY
    from worker.runtime import Runtime

    assert PRUNE_HISTORY == "entity_sync.housekeeping.prune_history"
    assert PRUNE_HISTORY in app.tasks
    # Beat sends the tick; the tick runs the prune as one of its steps.
    assert any(e["task"] == HOUSEKEEPING_TICK for e in BEAT_SCHEDULE.values())
    assert any(s.run is housekeeping.prune_old_history for s in housekeeping.STEPS)
    rt = Runtime(settings=Settings(store_url=store_url, history_retention_days=1))
    rt.store.add_connection(Connection(id="c1", name="n", entity_types=("assets",)))
    with rt.store._write() as tx:
        tx.executemany(
            "INSERT INTO schedule_log (connection_id, slot, outcome, at) VALUES (?, ?, ?, ?)",
            [("c1", slot, "enqueued", OLD) for slot in range(3)],
        )
    monkeypatch.setattr(housekeeping, "runtime", lambda publish: rt)
    assert housekeeping.prune_old_history.apply().get() == 3
    assert rt.store.schedule_log("c1") == []
