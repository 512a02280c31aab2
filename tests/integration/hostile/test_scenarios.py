"""Every sandbox scenario against one real worker, with healthy connections beside them.

One module-scoped run: ~19 connections (each fault scenario, a refused port and
two healthy ones, each syncing three entity types) are synced at once by ONE
worker (threads pool, embedded beat) with short timeouts and a small breaker.
The fixture waits until every connection has reached the state its scenario
should end in, then the tests below assert per connection what happened: run
statuses and error kinds in the store, breaker state in Redis, transitions in
the store's history, quarantine, the requests the sandbox saw, and that every
entity type that should have synced holds exactly the sandbox's truth.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from harness.testing.sandbox import SandboxHandle, running_sandbox
from tests.support import REDIS_URL, Env, WorkerProcess, postgres_schema
from worker.client import EntitySyncClient
from worker.resilience.breaker import BreakerView, State
from worker.resilience.connection_limits import apply_limits
from worker.runtime import Runtime
from worker.secrets import SecretBox
from worker.store import Connection, Run, RunStatus, SqlStore, TransitionRecord
from worker.store.models import TERMINAL_STATUSES
from worker.timeutil import canonical_instant

pytestmark = pytest.mark.integration

CLAIM_KEY = "entity-sync-test:claimed"
REFUSED_URL = "http://127.0.0.1:9"  # discard port: nothing listens there
TYPES = ("sites", "assets", "work-orders")
PAGE_SIZE = 25
SIZE = 60  # three pages per entity type
THRESHOLD = 3  # ENTITY_SYNC_BREAKER_CONSECUTIVE_FAILURES
MAX_CONCURRENCY = 4  # tasks of one connection at once (the default)
# Longer than a job waits for a busy slot (slot_wait.SLOT_WAIT_S): jobs come back
# inside the window, and only the shared pause keeps them quiet.
RETRY_AFTER_S = 4
# Requests on the wire when a 429 was answered land inside its window within
# this (generous) time; the window itself lasts RETRY_AFTER_S.
IN_FLIGHT_S = 1.0
SETTLE_TIMEOUT_S = 150.0

SUCCEEDED, FAILED, PARKED = "succeeded", "failed", "parked"


@dataclass(frozen=True)
class Case:
    """One connection of the run: its faults and how each entity type should end.

    ``ends``: entity type -> ``succeeded``, ``failed`` (terminal) or ``parked``
    (never terminal: a breaker keeps it deferred while the fault lasts).
    """

    name: str
    scenarios: list[dict[str, Any]]
    ends: dict[str, str]
    upstream_url: str | None = None
    latency_ms: float = 0.0
    max_concurrency: int | None = None  # None: the default (4 tasks at once)

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(self.ends)


def _all(end: str, types: tuple[str, ...] = TYPES) -> dict[str, str]:
    return dict.fromkeys(types, end)


def _one(broken: str, end: str, types: tuple[str, ...] = TYPES) -> dict[str, str]:
    return {t: (end if t == broken else SUCCEEDED) for t in types}


CASES = [
    Case("healthy-a", [], _all(SUCCEEDED)),
    Case("healthy-b", [], _all(SUCCEEDED, ("vendors", "users", "materials")), latency_ms=5),
    Case("offline", [{"name": "offline", "for_s": 6}], _all(SUCCEEDED)),
    Case("auth", [{"name": "auth_fail_from_page", "page": 2}], _all(FAILED)),
    Case(
        "forbidden", [{"name": "forbidden", "entity": "work-orders"}], _one("work-orders", FAILED)
    ),
    Case(
        "not-supported",
        [{"name": "not_supported", "entity": "purchase-orders"}],
        _one("purchase-orders", FAILED, ("sites", "purchase-orders", "vendors")),
    ),
    # One request in flight at a time: then not a single one may reach the
    # sandbox inside a window the worker was told about.
    Case(
        "rate-seconds",
        [{"name": "rate_limit", "every": 5, "retry_after_s": RETRY_AFTER_S}],
        _all(SUCCEEDED),
        max_concurrency=1,
    ),
    Case(
        "rate-date",
        [{"name": "rate_limit", "every": 5, "retry_after_s": RETRY_AFTER_S, "as_date": True}],
        _all(SUCCEEDED),
        max_concurrency=1,
    ),
    # Five entity types, four at once (the fifth waits for a slot and comes
    # back inside the window): requests already on the wire when the 429 is
    # answered may land inside the window, nothing sent after it.
    Case(
        "rate-parallel",
        [{"name": "rate_limit", "every": 4, "retry_after_s": RETRY_AFTER_S}],
        _all(SUCCEEDED, ("sites", "assets", "work-orders", "vendors", "users")),
    ),
    Case("flaky", [{"name": "flaky", "p": 0.3}], _all(SUCCEEDED)),
    Case("slow", [{"name": "slow", "latency_ms": 600}], _all(SUCCEEDED)),
    Case("html-502", [{"name": "html_502", "entity": "assets"}], _one("assets", PARKED)),
    Case("not-json", [{"name": "not_json", "entity": "assets"}], _one("assets", PARKED)),
    Case("no-data", [{"name": "no_data", "entity": "assets"}], _one("assets", PARKED)),
    Case("truncated", [{"name": "truncated", "entity": "assets", "for_s": 4}], _all(SUCCEEDED)),
    Case("bad-record", [{"name": "bad_record", "entity": "assets"}], _all(SUCCEEDED)),
    Case(
        "trickle",
        [{"name": "trickle", "entity": "assets", "bytes_per_second": 2}],
        _one("assets", PARKED),
    ),
    Case(
        "disconnect",
        [{"name": "disconnect", "entity": "assets", "reset": True}],
        _one("assets", PARKED),
    ),
    Case("source-timeout", [{"name": "source_timeout", "for_s": 5}], _all(SUCCEEDED)),
    Case("refused", [], _all(PARKED), upstream_url=REFUSED_URL),
]
BY_NAME = {case.name: case for case in CASES}


def redis_url(db: int) -> str:
    """The test Redis server, another database."""
    return urlunsplit(urlsplit(REDIS_URL)._replace(path=f"/{db}"))


@contextmanager
def own_redis_db() -> Iterator[str]:
    """The URL of an empty Redis database, claimed for the caller, flushed afterwards.

    The worker's broker queues live there too, so a database shared with
    other tests (which flush theirs, or run workers and beats on it) would
    mix their jobs into ours.
    """
    taken = {int(urlsplit(REDIS_URL).path.strip("/") or 0), 0, 15}
    for db in range(1, 16):
        if db in taken:
            continue
        client = redis.Redis.from_url(redis_url(db), socket_connect_timeout=2)
        try:
            if client.dbsize() == 0 and client.set(CLAIM_KEY, str(os.getpid()), nx=True):
                if client.dbsize() == 1:
                    try:
                        yield redis_url(db)
                    finally:
                        client.flushdb()
                    return
                client.delete(CLAIM_KEY)
        finally:
            client.close()
    raise RuntimeError(f"no empty Redis database left on {REDIS_URL}")


class RunWatcher:
    """Polls the run history and keeps every status each run has passed through."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._seen: dict[str, list[str]] = {}
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> RunWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def statuses(self, run_id: str) -> list[str]:
        with self._lock:
            return list(self._seen.get(run_id, []))

    def _poll(self) -> None:
        while not self._stop.wait(0.15):
            try:
                runs = self._store.recent_runs(limit=2000)
            except Exception:  # noqa: BLE001 - a missed poll only loses a sample
                continue
            with self._lock:
                for run in runs:
                    seen = self._seen.setdefault(run.id, [])
                    if not seen or seen[-1] != run.status:
                        seen.append(run.status)


@dataclass
class Outcome:
    """Everything observed about one connection when the run settled."""

    case: Case
    token: str
    request_id: str
    runs: dict[str, Run]  # entity type -> the request's deciding run
    history: dict[str, list[str]]  # entity type -> statuses that run went through
    transitions: list[TransitionRecord]
    breaker: BreakerView
    requests: list[dict[str, Any]]  # the sandbox's request log for the token
    stats: dict[str, Any]

    def moves(self, entity_type: str | None = None) -> list[tuple[str, str]]:
        """(from, to) of the transitions of the connection (None) or one entity type."""
        return [
            (t.from_state, t.to_state) for t in self.transitions if t.entity_type == entity_type
        ]

    def level(self, entity_type: str) -> State:
        for view in self.breaker.entity_types:
            if view.level == entity_type:
                return view.state
        return State.CLOSED

    def list_requests(self, entity_type: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.requests
            if r["path"].startswith("/api/eam/")
            and (entity_type is None or r["entity"] == entity_type)
        ]

    def answered(self, status: int) -> int:
        return sum(1 for r in self.requests if r["status"] == status)


@dataclass
class World:
    env: Env
    store: SqlStore
    sandbox: SandboxHandle
    worker: WorkerProcess
    outcomes: dict[str, Outcome]


def _deciding(store: SqlStore, request_id: str) -> dict[str, Run]:
    """Entity type -> the request's run (a skipped one resolved to the run it joined)."""
    found: dict[str, Run] = {}
    for run in store.runs_for_request(request_id):
        if run.status == RunStatus.SKIPPED and run.coalesced_into:
            run = store.get_run(run.coalesced_into) or run
        if run.entity_type:
            found[run.entity_type] = run
    return found


def _settled(case: Case, runs: dict[str, Run], transitions: list[TransitionRecord]) -> bool:
    for entity, end in case.ends.items():
        run = runs.get(entity)
        if run is None:
            return False
        if end == PARKED:
            # Parked for good: its breaker opened, and reopened after a failed probe.
            opened = [
                (t.from_state, t.to_state)
                for t in transitions
                if t.entity_type in (entity, None) and t.to_state == "open"
            ]
            if len(opened) < 2 or run.status in TERMINAL_STATUSES:
                return False
        elif run.status not in TERMINAL_STATUSES:
            return False
    return True


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("scenarios")
    with (
        own_redis_db() as own_redis_url,
        running_sandbox(preset="empty") as sandbox,
        postgres_schema() as store_url,
    ):
        env = Env(
            store_url=store_url,
            upstream_url=sandbox.url,
            ENTITY_SYNC_REDIS_URL=own_redis_url,
            ENTITY_SYNC_PAGE_SIZE=str(PAGE_SIZE),
            ENTITY_SYNC_REQUEST_DEADLINE="3",
            ENTITY_SYNC_READ_TIMEOUT="2",
            ENTITY_SYNC_CONNECT_TIMEOUT="2",
            ENTITY_SYNC_BREAKER_BASE_OPEN_SECONDS="1",
            ENTITY_SYNC_BREAKER_MAX_OPEN_SECONDS="3",
            ENTITY_SYNC_BREAKER_CONSECUTIVE_FAILURES=str(THRESHOLD),
            ENTITY_SYNC_MAX_RETRIES="3",
            ENTITY_SYNC_RETRY_BACKOFF_CAP_SECONDS="1",
            ENTITY_SYNC_BLOCK_REPROBE_SECONDS="600",
        )
        store = env.store()
        box = SecretBox(env.vars["ENTITY_SYNC_SECRET_KEY"])
        tokens: dict[str, str] = {}
        for case in CASES:
            tokens[case.name] = f"tok-{case.name}-{uuid.uuid4().hex[:8]}"
            store.add_connection(
                Connection(
                    id=case.name,
                    name=case.name,
                    entity_types=case.types,
                    token_ciphertext=box.encrypt(tokens[case.name]),
                    upstream_url=case.upstream_url,
                    max_concurrency=case.max_concurrency,
                )
            )
        runtime = Runtime(settings=env.settings())
        apply_limits(runtime.limits, store.list_connections())
        worker = WorkerProcess(env, tmp / "worker.log", concurrency=8).start()
        watcher = RunWatcher(store).start()
        try:
            # Connections go to the sandbox only now: this starts their scenario clocks.
            for n, case in enumerate(CASES):
                sandbox.put_connection(
                    tokens[case.name],
                    {
                        "seed": 100 + n,
                        "default_size": SIZE,
                        "latency_ms": case.latency_ms,
                        "scenarios": case.scenarios,
                    },
                )
            broker = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
            # Faults that last a few seconds first, so they are met while they last.
            windowed = sorted(CASES, key=lambda c: not any("for_s" in f for f in c.scenarios))
            requests = {case.name: broker.sync_connection(case.name) for case in windowed}
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            pending = list(CASES)
            while pending and time.monotonic() < deadline:
                pending = [
                    case
                    for case in pending
                    if not _settled(
                        case,
                        _deciding(store, requests[case.name]),
                        store.transitions(case.name),
                    )
                ]
                time.sleep(0.3)
            if pending:
                states = {
                    c.name: {e: r.status for e, r in _deciding(store, requests[c.name]).items()}
                    for c in pending
                }
                raise AssertionError(
                    f"not settled after {SETTLE_TIMEOUT_S:g}s: {states}\n{worker.log()[-4000:]}"
                )
            time.sleep(2.0)  # a quiet spell: anything still sent now would be a bug
            breaker = runtime.breaker
            stats = sandbox.stats()["tokens"]
            outcomes = {}
            for case in CASES:
                runs = _deciding(store, requests[case.name])
                token_stats = stats.get(tokens[case.name], {"total": 0, "requests": []})
                outcomes[case.name] = Outcome(
                    case=case,
                    token=tokens[case.name],
                    request_id=requests[case.name],
                    runs=runs,
                    history={e: watcher.statuses(r.id) for e, r in runs.items()},
                    transitions=store.transitions(case.name, limit=1000),
                    breaker=breaker.show(case.name),
                    requests=token_stats["requests"],
                    stats=token_stats,
                )
            yield World(env, store, sandbox, worker, outcomes)
        finally:
            watcher.stop()
            worker.stop()


# -- helpers -----------------------------------------------------------------------


def assert_synced(world: World, outcome: Outcome, entity: str) -> None:
    """The entity type's run succeeded and the store holds exactly the sandbox's truth."""
    run = outcome.runs[entity]
    assert run.status == RunStatus.SUCCEEDED, (entity, run)
    truth = {r["key"]: r for r in world.sandbox.truth(outcome.token, entity)}
    stored = {r.key: r for r in world.store.records(outcome.case.name, entity)}
    assert sorted(stored) == sorted(truth), f"{outcome.case.name}/{entity}: keys differ"
    for key, record in truth.items():
        assert stored[key].updated_at == canonical_instant(record["updatedAt"]), key
        assert stored[key].data == record, key
    assert run.records >= len(truth)


def assert_parked(outcome: Outcome, entity: str) -> None:
    """Never terminal, burnt no retry budget: deferred, and resumed again and again."""
    run = outcome.runs[entity]
    assert run.status in (RunStatus.DEFERRED, RunStatus.RUNNING), run
    assert RunStatus.DEFERRED in outcome.history[entity], outcome.history[entity]
    assert run.tasks >= 2, "a parked job is resumed when its breaker is due"
    assert run.error_kind is None


def siblings_of(outcome: Outcome, entity: str) -> list[str]:
    return [t for t in outcome.case.types if t != entity]


def _get(world: World, name: str) -> Outcome:
    return world.outcomes[name]


# -- every connection: the ones that should sync, did ------------------------------


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_every_entity_type_that_should_sync_holds_the_truth(world: World, name: str) -> None:
    outcome = _get(world, name)
    for entity, end in outcome.case.ends.items():
        run = outcome.runs[entity]
        if end == SUCCEEDED:
            assert run.status == RunStatus.SUCCEEDED, (entity, run, outcome.history[entity])
            if (name, entity) != ("bad-record", "assets"):  # keyless records cannot be stored
                assert_synced(world, outcome, entity)
        elif end == FAILED:
            assert run.status == RunStatus.FAILED, (entity, run)
        else:
            assert_parked(outcome, entity)


@pytest.mark.parametrize("name", ["healthy-a", "healthy-b"])
def test_healthy_connections_are_untouched_by_their_neighbours(world: World, name: str) -> None:
    outcome = _get(world, name)
    for entity in outcome.case.types:
        assert_synced(world, outcome, entity)
        assert outcome.history[entity][-1] == RunStatus.SUCCEEDED
        assert RunStatus.DEFERRED not in outcome.history[entity]
        assert outcome.runs[entity].tasks == 1, "no retry, no parking"
    assert outcome.transitions == []
    assert outcome.breaker.connection.state is State.CLOSED
    assert all(v.state is State.CLOSED for v in outcome.breaker.entity_types)
    assert set(outcome.stats["by_status"]) == {"200"}


# -- connection-wide, transient: the breaker opens, the jobs park, then finish -------


@pytest.mark.parametrize(("name", "status"), [("offline", 503), ("source-timeout", 504)])
def test_a_connection_down_for_seconds_parks_and_then_completes(
    world: World, name: str, status: int
) -> None:
    outcome = _get(world, name)
    assert ("closed", "open") in outcome.moves(), outcome.transitions
    opened = [t for t in outcome.transitions if t.entity_type is None and t.to_state == "open"]
    assert all("unavailable" in t.reason for t in opened), opened
    # Back to closed once a probe succeeded; nothing left open.
    assert outcome.moves()[-1][1] == "closed", outcome.moves()
    assert outcome.breaker.connection.state is State.CLOSED
    for entity in outcome.case.types:
        assert_synced(world, outcome, entity)
    parked = [e for e in outcome.case.types if RunStatus.DEFERRED in outcome.history[e]]
    assert parked, f"some job must have been parked: {outcome.history}"
    # The threshold (plus what was on the wire), then one probe per opening.
    failures = outcome.answered(status)
    assert THRESHOLD <= failures <= THRESHOLD + MAX_CONCURRENCY - 1 + len(opened), (
        failures,
        request_log(outcome.requests),
        outcome.transitions,
    )


# -- auth: halt once, fail the runs, stop calling ---------------------------------


def test_a_401_halts_the_connection_and_stops_every_call(world: World) -> None:
    outcome = _get(world, "auth")
    for entity in outcome.case.types:
        run = outcome.runs[entity]
        assert run.status == RunStatus.FAILED
        assert run.error_kind == "auth", run
    assert outcome.moves() == [("closed", "halted")], outcome.transitions
    assert outcome.breaker.connection.state is State.HALTED
    first_401 = next(i for i, r in enumerate(outcome.requests) if r["status"] == 401)
    after = outcome.requests[first_401:]
    lists_after = [r for r in after if r["path"].startswith("/api/eam/")]
    # Only the requests already in flight when the 401 arrived: one per entity type.
    assert len(lists_after) <= len(outcome.case.types), lists_after
    statuses_after = [r for r in after if r["path"] == "/api/integrations/current"]
    assert len(statuses_after) <= 1, "only the slow status probe"
    assert world.store.parked_jobs("auth") == []


# -- one entity type refused: block it, sync the others ---------------------------


@pytest.mark.parametrize(
    ("name", "entity", "status", "kind"),
    [
        ("forbidden", "work-orders", 403, "permission"),
        ("not-supported", "purchase-orders", 404, "not_supported"),
    ],
)
def test_a_refused_entity_type_is_blocked_and_its_siblings_sync(
    world: World, name: str, entity: str, status: int, kind: str
) -> None:
    outcome = _get(world, name)
    run = outcome.runs[entity]
    assert run.status == RunStatus.FAILED
    assert run.error_kind == "blocked", run
    assert (run.error_message or "").startswith(f"{entity} blocked: {kind}/entity_type"), run
    assert outcome.moves(entity) == [("closed", "blocked")], outcome.transitions
    assert outcome.moves() == [], "the connection itself is fine"
    assert outcome.level(entity) is State.BLOCKED
    assert outcome.breaker.connection.state is State.CLOSED
    assert outcome.answered(status) == 1, "blocked after the first refusal"
    for sibling in siblings_of(outcome, entity):
        assert_synced(world, outcome, sibling)


# -- 429: pause the whole connection, send nothing inside the window ---------------


def request_log(requests: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{r['t']:.4f} {r['path']} {r['status']}{' inside' if r['inside_retry_after'] else ''}"
        for r in requests
    )


@pytest.mark.parametrize("name", ["rate-seconds", "rate-date", "rate-parallel"])
def test_a_429_pauses_the_connection_until_retry_after(world: World, name: str) -> None:
    outcome = _get(world, name)
    assert outcome.answered(429) >= 2, "the scenario must have fired, more than once"
    if outcome.case.max_concurrency == 1:
        assert outcome.stats["inside_retry_after"] == 0, request_log(outcome.requests)
    else:
        assert_only_requests_in_flight_landed_inside(outcome.requests, len(outcome.case.types))
    assert ("closed", "paused") in outcome.moves(), outcome.transitions
    for entity in outcome.case.types:
        assert_synced(world, outcome, entity)
    assert any(RunStatus.DEFERRED in h for h in outcome.history.values()), outcome.history


def assert_only_requests_in_flight_landed_inside(
    requests: list[dict[str, Any]], entity_types: int
) -> None:
    """Per announced window, only requests that were already on the wire landed inside.

    A request sent before the 429 was answered cannot be called back: it lands
    inside the window moments after the announcement, one per other entity
    type at most, and its 429 parks its task. Anything later inside the window
    (a task coming back from waiting for a slot, say) was sent by a worker that
    knew of the pause and ignored it.
    """
    windows: list[list[dict[str, Any]]] = []
    for request in requests:
        if request["status"] == 429 and not request["inside_retry_after"]:
            windows.append([request])
        elif request["inside_retry_after"]:
            assert windows, request
            windows[-1].append(request)
    log = request_log(requests)
    for announced, *inside in windows:
        entities = [r["entity"] for r in inside]
        assert len(entities) == len(set(entities)), log
        assert announced["entity"] not in entities, log
        assert len(inside) <= entity_types - 1, log
        assert all(r["t"] - announced["t"] < IN_FLIGHT_S for r in inside), log


# -- flaky and slow: complete ---------------------------------------------------------


def test_a_flaky_connection_completes_through_retries(world: World) -> None:
    outcome = _get(world, "flaky")
    assert outcome.answered(500) >= 1, "p=0.3 over dozens of requests must fail some"
    for entity in outcome.case.types:
        assert_synced(world, outcome, entity)
    assert sum(r.tasks for r in outcome.runs.values()) > len(outcome.case.types), "retried"


def test_a_slow_connection_completes(world: World) -> None:
    outcome = _get(world, "slow")
    for entity in outcome.case.types:
        assert_synced(world, outcome, entity)
        assert outcome.runs[entity].tasks == 1
    assert set(outcome.stats["by_status"]) == {"200"}
    assert outcome.transitions == []


# -- broken answers on one entity type: retried, counted, its breaker opens -------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("html-502", "unavailable"),
        ("not-json", "bad_data"),
        ("no-data", "bad_data"),
        ("trickle", "unavailable"),
        ("disconnect", "unavailable"),
    ],
)
def test_a_persistently_broken_entity_type_opens_its_own_breaker(
    world: World, name: str, kind: str
) -> None:
    outcome = _get(world, name)
    broken = "assets"
    assert_parked(outcome, broken)
    moves = outcome.moves(broken)
    assert moves[0] == ("closed", "open"), outcome.transitions
    assert ("half_open", "open") in moves, "a failed probe reopens it"
    first = next(t for t in outcome.transitions if t.entity_type == broken)
    assert first.reason == f"{kind}: {THRESHOLD} consecutive failures", first
    assert outcome.moves() == [], "one entity type failing does not open the connection"
    assert outcome.breaker.connection.state is State.CLOSED
    assert outcome.level(broken) in (State.OPEN, State.HALF_OPEN)
    # Counted at the sandbox: the threshold, then one probe per reopening.
    broken_requests = len(outcome.list_requests(broken))
    reopenings = sum(1 for m in moves if m == ("half_open", "open"))
    assert THRESHOLD <= broken_requests <= THRESHOLD + reopenings + 1, (
        broken_requests,
        reopenings,
    )
    for sibling in siblings_of(outcome, broken):
        assert_synced(world, outcome, sibling)


def test_a_truncated_body_for_a_while_is_retried_and_completes(world: World) -> None:
    outcome = _get(world, "truncated")
    run = outcome.runs["assets"]
    assert len(outcome.list_requests("assets")) > run.pages, "some page was fetched again"
    for entity in outcome.case.types:
        assert_synced(world, outcome, entity)


def test_a_bad_record_is_quarantined_and_the_rest_stored(world: World) -> None:
    outcome = _get(world, "bad-record")
    run = outcome.runs["assets"]
    assert run.status == RunStatus.SUCCEEDED
    quarantined = world.store.quarantined("bad-record", "assets")
    assert quarantined and all(r == "record has no string key" for _, r in quarantined)
    assert run.quarantined >= 1
    truth = {r["key"]: r for r in world.sandbox.truth(outcome.token, "assets")}
    stored = {r.key: r for r in world.store.records("bad-record", "assets")}
    assert set(stored) < set(truth), "good records stored, the keyless ones missing"
    assert len(stored) + len(quarantined) >= len(truth)
    assert all(stored[k].data == truth[k] for k in stored)
    assert outcome.transitions == [], "a bad record says nothing about the upstream's health"
    for sibling in siblings_of(outcome, "assets"):
        assert_synced(world, outcome, sibling)


# -- nobody answers at all ------------------------------------------------------------


def test_a_refused_connection_opens_its_breaker_and_waits(world: World) -> None:
    outcome = _get(world, "refused")
    assert outcome.stats["total"] == 0
    moves = outcome.moves()
    assert moves[0] == ("closed", "open"), outcome.transitions
    assert ("half_open", "open") in moves
    assert all("unavailable" in t.reason for t in outcome.transitions if t.to_state == "open")
    assert outcome.breaker.connection.state in (State.OPEN, State.HALF_OPEN)
    for entity in outcome.case.types:
        assert_parked(outcome, entity)


def test_the_worker_kept_working(world: World) -> None:
    assert world.worker.proc is not None and world.worker.proc.poll() is None
    log = world.worker.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 2000 :][:6000]
