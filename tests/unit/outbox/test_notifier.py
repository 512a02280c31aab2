"""``deliver_pending`` with a fake send: order, stop at the first failure, leases.

No HTTP and no Redis: events are written the way a transition writes them
(``TransitionRecorder`` over an SQLite store in a temporary directory), the
delivery lease is taken on an in-memory stand-in for Redis, and ``send`` is a
function that answers what each row asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from worker.coordination import redis_keys
from worker.events import Event
from worker.outbox.notifier import Attempt, deliver_pending
from worker.outbox.transitions import TransitionRecorder
from worker.resilience.breaker_types import State
from worker.resilience.guard import StateChange
from worker.secrets import SecretBox, generate_key
from worker.settings import Settings
from worker.store import Connection, SqlStore, open_store

URL = "https://hooks.example/entity-sync"


class MemoryRedis:
    """Just enough of a Redis client for ``coordination.lease.Lock``."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def register_script(self, source: str) -> Any:
        if "'PX', ARGV[3]" in source:  # hand over
            return lambda keys, args: self._handover(keys[0], args[0], args[1])
        if "DEL" in source:  # release
            return lambda keys, args: self._release(keys[0], args[0])
        return lambda keys, args: self._acquire(keys[0], args[0])

    def _acquire(self, key: str, holder: str) -> str:
        return self.values.setdefault(key, holder)

    def _handover(self, key: str, holder: str, successor: str) -> int:
        if self.values.get(key) != holder:
            return 0
        self.values[key] = successor
        return 1

    def _release(self, key: str, holder: str) -> int:
        if self.values.get(key) != holder:
            return 0
        del self.values[key]
        return 1

    def set(self, key: str, value: str, *, nx: bool, px: int) -> bool:
        if nx and key in self.values:
            return False
        self.values[key] = value
        return True

    def get(self, key: str) -> bytes | None:
        value = self.values.get(key)
        return None if value is None else value.encode()


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    store.add_connection(
        Connection(id="acme", name="Acme", entity_types=("assets",), webhook_url=URL)
    )
    return store


def _settings(tmp_path: Path) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path}/store.db", webhook_secret="whsec-test-secret")  # type: ignore[arg-type]


def _events(store: SqlStore, count: int) -> None:
    """Halts and recoveries in turn: each writes one event in the outbox."""
    record = TransitionRecorder(store, lambda _connection_id: None)
    for n in range(count):
        if n % 2 == 0:
            record(StateChange("acme", None, State.CLOSED, State.HALTED, "auth", None))
        else:
            record(StateChange("acme", None, State.HALTED, State.CLOSED, "healthy", None))


class Sender:
    def __init__(self, answers: Sequence[Attempt] = ()) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, tuple[str, ...], str]] = []

    def __call__(self, url: str, secrets: Sequence[str], event: Event) -> Attempt:
        self.sent.append((url, tuple(secrets), event.type))
        return self.answers.pop(0) if self.answers else Attempt(True)


def _deliver(
    store: SqlStore, tmp_path: Path, send: Sender, cache: MemoryRedis | None = None
) -> Any:
    return deliver_pending(
        store=store,
        cache=cache or MemoryRedis(),  # type: ignore[arg-type]
        secrets=SecretBox(generate_key()),
        settings=_settings(tmp_path),
        connection_id="acme",
        send=send,
        rand=lambda: 0.5,
    )


def test_due_events_go_out_in_order_signed_with_the_secret(store: SqlStore, tmp_path: Path) -> None:
    _events(store, 3)
    send = Sender()
    report = _deliver(store, tmp_path, send)
    assert (report.delivered, report.failed, report.dead, report.busy) == (3, 0, 0, False)
    assert [s[2] for s in send.sent] == [
        "connection.reauthorization_required",
        "connection.recovered",
        "connection.reauthorization_required",
    ]
    assert {s[0] for s in send.sent} == {URL}
    assert {s[1] for s in send.sent} == {("whsec-test-secret",)}
    assert store.pending_events("acme") == []


def test_a_failure_stops_the_pass_so_later_events_keep_their_order(
    store: SqlStore, tmp_path: Path
) -> None:
    _events(store, 3)
    send = Sender([Attempt(True), Attempt(False, "503")])
    report = _deliver(store, tmp_path, send)
    assert (report.delivered, report.failed) == (1, 1)
    assert len(send.sent) == 2  # the third waits behind the second
    assert len(store.pending_events("acme")) == 2


def test_another_notifier_holding_the_connection_makes_this_one_stand_down(
    store: SqlStore, tmp_path: Path
) -> None:
    _events(store, 1)
    cache = MemoryRedis()
    cache.values[redis_keys.notify_lease("acme")] = "someone else"
    send = Sender()
    report = _deliver(store, tmp_path, send, cache)
    assert report.busy and send.sent == []


def test_the_lease_is_given_back_after_a_pass(store: SqlStore, tmp_path: Path) -> None:
    _events(store, 1)
    cache = MemoryRedis()
    _deliver(store, tmp_path, Sender(), cache)
    assert cache.values == {}
