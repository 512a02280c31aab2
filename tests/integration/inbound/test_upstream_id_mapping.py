"""Which connection a webhook of the unified API names: ids are mapped per upstream base URL.

The audit's case (issue 19, finding 7): a proxy in front of a second unified
API rewrote the status ``id``, so one connection learned another's id, and
the other's signed re-authorisation event then halted both, its reason text
going to the wrong customer. Here two sandboxes play the two APIs (the second
is the proxy, answering the first's id), and a third connection on the first
API answers the same id too (two tokens of one upstream connection).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.testing.sandbox import running_sandbox
from tests.integration.inbound.test_upstream_webhooks import ReceiverProcess
from tests.support import Env, WebhookReceiver, WorkerProcess, wait_for, wait_for_runs
from worker.client import EntitySyncClient
from worker.inbound.actions import process_event
from worker.operator_input import upstream_base
from worker.resilience.breaker import State
from worker.runtime import Runtime
from worker.secrets import SecretBox
from worker.store import Connection, RunStatus, SqlStore, open_store
from worker.store.inbound import UpstreamEvent
from worker.store.schema import BOOTSTRAP, MIGRATIONS
from worker.store.upstream_ids import Learned
from worker.sync.preflight import learn_upstream_id
from worker.sync.recovery import probe
from worker.timeutil import utc_now

pytestmark = pytest.mark.integration

UPSTREAM_SECRET = "upstream-signing-secret-42"
CUSTOMER_SECRET = "whsec_customer_0123456789"
SHARED_ID = "09000000000042"


def add(env: Env, connection_id: str, token: str, **fields: Any) -> None:
    box = SecretBox(env.vars["ENTITY_SYNC_SECRET_KEY"])
    env.store().add_connection(
        Connection(
            id=connection_id,
            name=connection_id,
            entity_types=("assets",),
            token_ciphertext=box.encrypt(token),
            **fields,
        )
    )


def test_a_proxy_that_rewrites_ids_and_a_second_token_cannot_take_another_customers_events(
    test_redis: Any, worker_factory: list[WorkerProcess], tmp_path: Path, store_url: str
) -> None:
    acme, twin, globex = (f"tok-{name}-{uuid.uuid4().hex[:8]}" for name in ("a", "t", "g"))
    one_api = {"connections": {t: {"id": SHARED_ID, "default_size": 5} for t in (acme, twin)}}
    proxied = {"connections": {globex: {"id": SHARED_ID, "default_size": 5}}}
    customer = WebhookReceiver(CUSTOMER_SECRET).start()
    with running_sandbox(one_api) as api, running_sandbox(proxied) as proxy:
        env = Env(
            store_url=store_url,
            upstream_url=api.url,
            ENTITY_SYNC_UPSTREAM_WEBHOOK_SECRET=UPSTREAM_SECRET,
            ENTITY_SYNC_WEBHOOK_SECRET=CUSTOMER_SECRET,
            ENTITY_SYNC_WEBHOOK_ALLOW_HTTP="true",
            ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE="true",
        )
        add(env, "acme", acme, webhook_url=customer.url)
        # The same API as the default, spelled differently: the same base URL.
        add(env, "twin", twin, webhook_url=customer.url, upstream_url=api.url.upper() + "/")
        add(env, "globex", globex, webhook_url=customer.url, upstream_url=proxy.url)
        receiver = ReceiverProcess(env, tmp_path / "receiver.log")
        try:
            api.set_webhooks(receiver.url, UPSTREAM_SECRET)
            worker = WorkerProcess(env, tmp_path / "worker.log").start()
            worker_factory.append(worker)
            store = env.store()
            client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
            for connection_id in ("acme", "twin", "globex"):  # acme's preflight learns first
                request = client.sync_connection(connection_id)
                [run] = wait_for_runs(store, request, ["assets"], timeout_s=60)
                assert run.status == RunStatus.SUCCEEDED

            # Each API's id is its own: acme and globex are both mapped to the digits.
            assert store.upstream_connection_id("acme") == SHARED_ID
            assert store.upstream_connection_id("globex") == SHARED_ID
            assert store.upstream_mapping("globex").base_url == upstream_base(proxy.url)  # type: ignore[union-attr]
            # The second connection reporting acme's id at acme's API is refused.
            assert store.upstream_connection_id("twin") is None
            shown = json.loads(env.cli("connections", "show", "twin").stdout)
            assert shown["upstream_id_refused"]["id"] == SHARED_ID
            assert shown["upstream_id_refused"]["mapped_to"] == "acme"
            held = json.loads(env.cli("connections", "show", "acme").stdout)
            assert held["upstream_id_also_reported_by"] == ["twin"]
            status = env.cli("status").stdout
            refused = f"twin: upstream id {SHARED_ID} at {upstream_base(api.url)} is mapped to acme"
            assert refused in status
            assert "acme: twin reports this connection's upstream id" in status
            warnings = [
                line
                for line in worker.log().splitlines()
                if "WARNING" in line and "already mapped to connection acme" in line
            ]
            assert len(warnings) == 1 and "twin" in warnings[0], worker.log()[-3000:]
            assert not any(token in worker.log() for token in (acme, twin, globex))

            # acme's API says acme must re-authorise: acme alone is halted and told.
            # Revoked for real (401 from now on), or the halted connection's slow
            # status probe would find it healthy and resume it: webhooks are hints.
            event = api.revoke(acme)
            assert event is not None and event["connection_id"] == SHARED_ID
            reason = event["data"]["reason"]
            wait_for(
                lambda: customer.of_type("connection.reauthorization_required"),
                30,
                "acme's customer event",
                worker,
            )
            wait_for(
                lambda: store.upstream_events(status="applied"), 10, "the event applied", worker
            )
            wait_for(lambda: not store.events(status="pending"), 20, "the outbox to drain")
            told = customer.of_type("connection.reauthorization_required")
            assert [e["connection_id"] for e in told] == ["acme"]
            assert reason in json.dumps(told[0])
            rt = Runtime(settings=env.settings())
            assert rt.breaker.show("acme").connection.state is State.HALTED
            assert rt.breaker.show("twin").connection.state is State.CLOSED
            assert rt.breaker.show("globex").connection.state is State.CLOSED
            [kept] = store.upstream_events()
            assert kept.connection_ids == "acme"
        finally:
            receiver.stop()
            customer.stop()


def test_the_slow_probe_of_a_halted_connection_learns_its_id_at_its_own_api(
    test_redis: Any, tmp_path: Path
) -> None:
    """The second caller of learn_upstream_id (worker/sync/recovery.py) passes the
    base URL it asked too: a halted connection behind the proxy is mapped there."""
    token = f"tok-h-{uuid.uuid4().hex[:8]}"
    config = {"connections": {token: {"id": SHARED_ID, "default_size": 1}}}
    with running_sandbox(config) as proxy:
        env = Env(store_url=f"sqlite:///{tmp_path}/store.db", upstream_url=API)
        add(env, "held", token, upstream_url=proxy.url)
        rt = Runtime(settings=env.settings())
        rt.breaker.halt("held", "a 401 before the test")
        probe(rt, lambda name, *_args, **_kw: name)
    mapping = rt.store.upstream_mapping("held")
    assert mapping is not None
    assert (mapping.base_url, mapping.upstream_id) == (upstream_base(proxy.url), SHARED_ID)
    assert rt.store.connections_for_upstream_id(upstream_base(API), SHARED_ID) == []


# -- the store's rules, on both backends -------------------------------------------------


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    opened = open_store(store_url)
    for connection_id in ("a", "b", "c"):
        opened.add_connection(Connection(id=connection_id, name=connection_id, entity_types=()))
    yield opened


API = "https://api.example.com/v3"
PROXY = "https://proxy.example.net/v3"


def test_an_id_is_unique_per_base_url_and_the_first_holder_keeps_it(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="entity_sync")
    learn_upstream_id(store, "a", SHARED_ID, base_url=API)
    learn_upstream_id(store, "c", SHARED_ID, base_url=PROXY)
    # Spelled otherwise, the same API: refused, and said once however often reported.
    for _ in range(3):
        learn_upstream_id(store, "b", SHARED_ID, base_url="HTTPS://API.example.com:443/v3/")
    assert store.connections_for_upstream_id(upstream_base(API), SHARED_ID) == ["a"]
    assert store.connections_for_upstream_id(upstream_base(PROXY), SHARED_ID) == ["c"]
    refusal = store.upstream_mapping("b")
    assert refusal is not None
    assert (refusal.upstream_id, refusal.refused_id, refusal.holder) == (None, SHARED_ID, "a")
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "connection a" in warned[0].getMessage() and "to b" in warned[0].getMessage()
    assert getattr(warned[0], "connection_id", None) == "b"

    # The holder reports another id: the refused one takes the free id at its next preflight.
    learn_upstream_id(store, "a", "09000000000099", base_url=API)
    learn_upstream_id(store, "b", SHARED_ID, base_url=API)
    assert store.connections_for_upstream_id(upstream_base(API), SHARED_ID) == ["b"]
    assert store.upstream_id_refusals() == []
    # Refused again (a wants it back): b keeps it; a is unmapped, not left on its old id.
    assert store.learn_upstream_id("a", upstream_base(API), SHARED_ID).outcome is Learned.REFUSED
    assert store.upstream_connection_id("a") is None
    # A connection moved to another API forgets the id learned at the old one.
    store.update_connection("b", upstream_url=PROXY + "/other")
    assert store.upstream_mapping("b") == type(refusal)("b", None, None)
    assert store.connections_for_upstream_id(upstream_base(API), SHARED_ID) == []


def test_connections_learning_one_id_at_once_leave_one_holder(store_url: str) -> None:
    """Preflights of many connections race (PostgreSQL runs them side by side):
    the unique index lets one win, and every other is refused, none left unmapped
    by an error."""
    opened = open_store(store_url)
    racers = [f"r{i}" for i in range(6)]
    for connection_id in racers:
        opened.add_connection(Connection(id=connection_id, name=connection_id, entity_types=()))
    start = threading.Barrier(len(racers))

    def learn(connection_id: str) -> None:
        own = SqlStore(store_url)  # a connection of its own, as another worker has
        start.wait(10)
        learn_upstream_id(own, connection_id, SHARED_ID, base_url=API)

    threads = [threading.Thread(target=learn, args=(c,)) for c in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    [holder] = opened.connections_for_upstream_id(upstream_base(API), SHARED_ID)
    refused = {r.connection_id: r.holder for r in opened.upstream_id_refusals()}
    assert refused == {c: holder for c in racers if c != holder}


def test_events_apply_only_to_connections_of_the_receivers_api(
    store_url: str, test_redis: Any
) -> None:
    env = Env(
        store_url=store_url,
        upstream_url=API,
        ENTITY_SYNC_RECEIVER_UPSTREAM_URL=PROXY + "/",
    )
    store = env.store()
    for connection_id, url in (("near", None), ("far", PROXY)):
        store.add_connection(
            Connection(
                id=connection_id, name=connection_id, entity_types=("assets",), upstream_url=url
            )
        )
        learn_upstream_id(store, connection_id, SHARED_ID, base_url=url or API)
    event_id, created_at = f"evt_{uuid.uuid4().hex[:12]}", utc_now()
    body = {
        "id": event_id,
        "type": "sync.completed",
        "created_at": created_at,
        "connection_id": SHARED_ID,
        "data": {"entity_types": ["assets"]},
    }
    store.record_upstream_event(
        UpstreamEvent(
            id=event_id,
            type="sync.completed",
            upstream_connection_id=SHARED_ID,
            created_at=created_at,
            received_at=utc_now(),
            body=json.dumps(body),
        )
    )
    sent: list[dict[str, Any]] = []

    def send(name: str, payload: dict[str, Any], queue: str | None, **_: Any) -> str:
        sent.append(payload)
        return name

    outcome = process_event(Runtime(settings=env.settings()), event_id, send)
    assert outcome == "applied"
    assert [p["connection_id"] for p in sent] == ["far"]


def test_ids_learned_without_their_base_are_forgotten_by_the_migration(tmp_path: Path) -> None:
    """A store of the version before shares ids across connections (the bug): the
    migration drops them, and each connection learns its own again with its base."""
    url = f"sqlite:///{tmp_path}/old.db"
    old = SqlStore(url)
    with old._write() as tx:
        tx.execute(BOOTSTRAP)
        for version in sorted(v for v in MIGRATIONS if v < 13):
            for statement in MIGRATIONS[version]:
                tx.execute(statement)
        tx.execute("INSERT INTO schema_version (version) VALUES (?)", (max(MIGRATIONS) - 1,))
        for connection_id in ("a", "b"):
            tx.execute(
                "INSERT INTO connections (id, name, entity_types, created_at, updated_at, "
                "upstream_connection_id) VALUES (?, ?, '', '', '', ?)",
                (connection_id, connection_id, SHARED_ID),
            )
    migrated = open_store(url)
    assert [migrated.upstream_connection_id(c) for c in ("a", "b")] == [None, None]
    learn_upstream_id(migrated, "a", SHARED_ID, base_url=API)
    learn_upstream_id(migrated, "b", SHARED_ID, base_url=API)
    assert migrated.connections_for_upstream_id(upstream_base(API), SHARED_ID) == ["a"]
