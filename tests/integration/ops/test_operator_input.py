"""Operator input is checked before it is saved, and a bad stored row hurts no other connection.

The CLI runs as users run it, in a subprocess; where the store matters, on
SQLite and PostgreSQL; Redis is the test run's real server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import Env
from worker.coordination import redis_keys
from worker.events import EventReason, EventType, build_event
from worker.runtime import Runtime
from worker.secrets import SecretBox
from worker.store import (
    Connection,
    PageCommit,
    ParkedJob,
    QuarantinedRecord,
    RecordRow,
    Run,
    RunStatus,
    SqlStore,
    TransitionRecord,
)
from worker.store.inbound import UpstreamAspect
from worker.store.registry import CONNECTION_TABLES
from worker.sync.recovery import probe
from worker.sync.schedule import current_slot, schedule_due

pytestmark = pytest.mark.integration

TOKEN = "operator-input-token-7c1e"


def _env(store_url: str, **extra: str) -> Env:
    return Env(store_url=store_url, upstream_url="http://127.0.0.1:9", **extra)


def _refused(result: Any, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


# -- limits ----------------------------------------------------------------------------


def test_limits_out_of_range_are_refused_and_nothing_is_saved(store_url: str) -> None:
    env = _env(store_url)
    assert env.cli("connections", "add", "plant-1").returncode == 0
    for args, option in [
        (["--rate", "0"], "--rate"),
        (["--rate", "-5"], "--rate"),
        (["--rate", "nan"], "--rate"),
        (["--rate", "inf"], "--rate"),
        (["--rate", "1e9"], "--rate"),
        (["--burst", "0"], "--burst"),
        (["--burst", "1000000"], "--burst"),
        (["--max-concurrency", "0"], "--max-concurrency"),
        (["--max-concurrency", "-1"], "--max-concurrency"),
    ]:
        _refused(env.cli("connections", "limits", "plant-1", *args), option)
    stored = env.store().get_connection("plant-1")
    assert (stored.rate_per_second, stored.rate_burst, stored.max_concurrency) == (None, None, None)
    ok = env.cli("connections", "limits", "plant-1", "--rate", "2.5", "--burst", "5")
    assert ok.returncode == 0, ok.stderr
    assert env.store().get_connection("plant-1").rate_per_second == 2.5


def test_a_bad_stored_limits_row_does_not_stop_the_probe_for_others(
    store_url: str, test_redis: redis.Redis
) -> None:
    env = _env(store_url)
    store = env.store()
    for cid in ("a-bad", "b-good"):
        store.add_connection(Connection(id=cid, name=cid, entity_types=("assets",)))
    # Written before the CLI checked it (or by hand): the store takes it.
    store.set_limits("a-bad", rate_per_second=0.0, rate_burst=0, max_concurrency=-3)
    store.set_limits("b-good", rate_per_second=3.0, rate_burst=7, max_concurrency=2)
    rt = Runtime(settings=env.settings())
    sent: list[Any] = []
    counts = probe(rt, lambda *a: sent.append(a))  # raised ValueError for everyone before
    assert counts["halted_probed"] == 0
    good = rt.limits.get_connection_limits("b-good")
    assert (good.rate_per_s, good.burst, good.max_concurrency) == (3.0, 7, 2)
    bad = rt.limits.get_connection_limits("a-bad")
    assert (bad.rate_per_s, bad.burst, bad.max_concurrency) == (None, None, None)  # defaults


# -- intervals and the schedule ----------------------------------------------------------


def test_intervals_out_of_range_are_refused(tmp_path: Path) -> None:
    env = _env(f"sqlite:///{tmp_path}/store.db")
    assert env.cli("connections", "add", "plant-1").returncode == 0
    for seconds in ("-60", "0", "604801"):
        _refused(env.cli("connections", "interval", "plant-1", seconds), "SECONDS")
    assert env.store().get_connection("plant-1").sync_interval_s is None
    assert env.cli("connections", "interval", "plant-1", "60").returncode == 0
    assert env.store().get_connection("plant-1").sync_interval_s == 60


def _tick(store: SqlStore, now: float, default_s: int = 900) -> list[str]:
    enqueued: list[str] = []
    schedule_due(
        store,
        store.list_connections(),
        default_interval_s=default_s,
        now=now,
        enqueue=lambda c: enqueued.append(c.id),
    )
    return enqueued


def test_a_tick_writes_only_for_the_connections_whose_slot_turned(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _env(store_url).store()
    for n in range(30):
        store.add_connection(Connection(id=f"c{n:02d}", name="c", entity_types=("assets",)))
    claims: list[str] = []
    real_claim = store.claim_slot

    def counted(connection_id: str, slot: int, outcome: str) -> bool:
        claims.append(connection_id)
        return real_claim(connection_id, slot, outcome)

    monkeypatch.setattr(store, "claim_slot", counted)
    now = 1_800_000_000.0
    assert len(_tick(store, now)) == 30 and len(claims) == 30
    claims.clear()
    # A tick later nothing turned: no write transaction at all (at 100,000
    # connections a claim each would be 100,000 transactions every tick).
    assert _tick(store, now + 5) == [] and claims == []
    # Over one interval every connection's slot turns once, and only then is it claimed.
    later = [c for t in range(10, 910, 5) for c in _tick(store, now + t)]
    assert sorted(later) == sorted(claims) and len(later) == 30


def test_a_bad_stored_interval_falls_back_to_the_default(store_url: str) -> None:
    store = _env(store_url).store()
    store.add_connection(Connection(id="neg", name="neg", entity_types=("assets",)))
    store.set_interval("neg", -60)  # as `connections interval neg -60` saved it before
    now = 1_800_000_000.0
    assert _tick(store, now) == ["neg"]
    # Before, the negative slot numbers only fell, so no later slot was ever claimed.
    assert _tick(store, now + 900) == ["neg"]
    assert _tick(store, now + 1800) == ["neg"]


def test_a_longer_interval_is_scheduled_from_its_own_slots(store_url: str) -> None:
    store = _env(store_url).store()
    store.add_connection(Connection(id="c", name="c", entity_types=("assets",)))
    store.set_interval("c", 60)
    now = 1_800_000_000.0
    assert _tick(store, now) == ["c"]
    store.set_interval("c", 3600)  # its slot numbers are now far smaller than the last one
    assert _tick(store, now + 1) == ["c"]
    assert _tick(store, now + 2) == []
    assert _tick(store, now + 3601) == ["c"]


def test_remove_and_add_again_inside_one_slot_keeps_the_tick_for_others(
    store_url: str, test_redis: redis.Redis
) -> None:
    env = _env(store_url)
    store = env.store()
    store.add_connection(Connection(id="a", name="a", entity_types=("assets",)))
    now = 1_800_000_000.0
    assert _tick(store, now) == ["a"]
    assert env.cli("connections", "remove", "a").returncode == 0
    assert env.cli("connections", "add", "a").returncode == 0
    assert env.cli("connections", "add", "b").returncode == 0
    # Same slot: the old log row of "a" made its claim fail, and the tick
    # stopped before "b".
    assert _tick(store, now + 1) == ["a", "b"]
    assert _tick(store, now + 2) == []


def test_one_connection_failing_its_claim_does_not_stop_the_tick(store_url: str) -> None:
    store = _env(store_url).store()
    for cid in ("a", "b"):
        store.add_connection(Connection(id=cid, name=cid, entity_types=("assets",)))
    now = 1_800_000_000.0
    # A log row the claim will collide with on a store without the upsert.
    slot = current_slot("a", 900, now)
    assert store.claim_slot("a", slot - 5, "enqueued")
    with store._write() as tx:  # an inconsistent row, as an old version left it
        tx.execute("UPDATE connections SET last_slot = NULL WHERE id = 'a'")
        tx.execute(
            "INSERT INTO schedule_log (connection_id, slot, outcome, at) VALUES ('a', ?, 'x', 'y')",
            (slot,),
        )
    assert _tick(store, now) == ["a", "b"]


# -- remove --------------------------------------------------------------------------


def _fill(env: Env, store: SqlStore, client: redis.Redis, cid: str) -> None:
    """Give a connection something in every table and every kind of Redis key."""
    store.add_connection(Connection(id=cid, name=cid, entity_types=("assets",)))
    run = Run(
        id=f"run-{cid}",
        connection_id=cid,
        entity_type="assets",
        status="running",
        started_at="2026-11-20T08:00:00.000000Z",
    )
    store.start_run(run)
    store.commit_page(
        PageCommit(
            connection_id=cid,
            entity_type="assets",
            run_id=run.id,
            records=(RecordRow("A-1", '{"id": "A-1"}', "2026-11-20T08:00:00.000000Z", None),),
            quarantined=(QuarantinedRecord(reason="bad", raw_json='{"x": 1}', key="A-2"),),
            cursor="2026-11-20T08:00:00.000000Z",
        )
    )
    store.finish_run(run.id, RunStatus.SUCCEEDED)
    store.park_job(
        ParkedJob(
            connection_id=cid,
            entity_type="assets",
            run_id=run.id,
            due_at="2026-11-20T08:00:00.000000Z",
            reason="open",
            payload_json="{}",
        )
    )
    store.record_transition(
        TransitionRecord(cid, None, "closed", "halted", "401", None, "2026-11-20T08:00:00Z"),
        build_event(
            EventType.REAUTHORIZATION_REQUIRED,
            connection_id=cid,
            entity_type=None,
            reason=EventReason(kind="auth", message="401"),
        ),
    )
    assert store.claim_slot(cid, 5, "enqueued")
    store.fold_runs()  # the finished run into run_totals
    with store._write() as tx:  # what retention keeps of pruned transitions
        tx.execute(
            "INSERT INTO transition_totals (connection_id, level, from_state, to_state, count)"
            " VALUES (?, 'connection', 'closed', 'open', 1)",
            (cid,),
        )
        # A deletion the mass-deletion guard holds (worker/store/held_deletions.py).
        tx.execute(
            "INSERT INTO held_deletions (connection_id, entity_type, key, held_at, run_id) "
            "VALUES (?, 'assets', 'A-1', '2026-11-20T08:00:00.000000Z', ?)",
            (cid, run.id),
        )
    assert store.apply_aspect(
        UpstreamAspect(cid, "auth", f"evt-{cid}", "connection.reauthorization_required",
                       "2026-11-20T08:00:00.000000Z", "2026-11-20T08:00:01.000000Z")
    )  # fmt: skip
    assert store.take_notify_fence(cid) == 1  # a notifier delivered its events once
    rt = Runtime(settings=env.settings())
    rt.breaker.halt(cid, "401")
    rt.breaker.pause(cid, 60, "429")
    rt.limits.set_connection_limits(cid, rate_per_s=2.0)
    rt.leases.acquire(cid, "assets", "holder-1")
    rt.limits.acquire_slot(cid, "holder-1", ttl_s=60)
    client.set(redis_keys.preflight(cid), "{}")


_TABLES = CONNECTION_TABLES


def test_remove_knows_every_table_that_holds_a_connections_rows(store_url: str) -> None:
    store = _env(store_url).store()
    if store.dialect.name == "sqlite":
        tables = [r[0] for r in store._read("SELECT name FROM sqlite_master WHERE type = 'table'")]
        holding = {
            t
            for t in tables
            if any(c[1] == "connection_id" for c in store._read(f"PRAGMA table_info({t})"))
        }
    else:
        holding = {
            r[0]
            for r in store._read(
                "SELECT table_name FROM information_schema.columns "
                "WHERE column_name = 'connection_id' AND table_schema = current_schema()"
            )
        }
    assert holding == set(CONNECTION_TABLES), "add the new table to CONNECTION_TABLES"


def _rows(store: SqlStore, cid: str) -> dict[str, int]:
    counts = {
        t: len(store._read(f"SELECT 1 FROM {t} WHERE connection_id = ?", (cid,))) for t in _TABLES
    }
    counts["connections"] = len(store._read("SELECT 1 FROM connections WHERE id = ?", (cid,)))
    return counts


def _keys(client: redis.Redis, cid: str) -> list[bytes]:
    return list(client.scan_iter(match=redis_keys.connection_pattern(cid)))


def test_remove_leaves_nothing_behind_and_touches_no_other(
    store_url: str, test_redis: redis.Redis
) -> None:
    env = _env(store_url)
    store = env.store()
    for cid in ("gone", "gone-2"):  # "gone-2" shares a prefix: its keys must stay
        _fill(env, store, test_redis, cid)
    before_other = _rows(store, "gone-2")
    assert all(before_other.values()), before_other
    assert len(_keys(test_redis, "gone")) >= 6
    other_keys = sorted(_keys(test_redis, "gone-2"))

    removed = env.cli("connections", "remove", "gone")
    assert removed.returncode == 0, removed.stderr

    assert _rows(store, "gone") == dict.fromkeys((*_TABLES, "connections"), 0)
    assert _keys(test_redis, "gone") == []
    assert _rows(store, "gone-2") == before_other
    assert sorted(_keys(test_redis, "gone-2")) == other_keys

    # Added again under the same id it starts clean: not halted, no history.
    assert env.cli("connections", "add", "gone").returncode == 0
    status = json.loads(env.cli("status", "gone", "--json").stdout)
    assert [(s["records"], s["last_run_status"]) for s in status] == [(0, None)] * len(status)
    assert Runtime(settings=env.settings()).breaker.show("gone").connection.state == "closed"
    _refused(env.cli("connections", "remove", "no-such"), "unknown connection")


# -- upstream URL --------------------------------------------------------------------


def test_the_upstream_url_follows_the_global_rule(tmp_path: Path) -> None:
    env = _env(f"sqlite:///{tmp_path}/store.db")
    for n, url in enumerate(
        [
            "ftp://api.example",
            "api.example",
            "https://",
            "https://api.example:99999",
            "https://api.example/a b",
            "javascript:alert(1)",
        ]
    ):
        _refused(env.cli("connections", "add", f"c{n}", "--upstream-url", url), "--upstream-url")
    assert env.store().list_connections() == []
    plain = env.cli("connections", "add", "p", "--upstream-url", "http://10.0.0.5:8900/")
    assert plain.returncode == 0, plain.stderr
    assert "warning" in plain.stderr and "http" in plain.stderr
    secure = env.cli("connections", "add", "s", "--upstream-url", "https://api.example/v1/")
    assert secure.returncode == 0 and "warning" not in secure.stderr
    assert env.store().get_connection("p").upstream_url == "http://10.0.0.5:8900"
    assert env.store().get_connection("s").upstream_url == "https://api.example/v1"


# -- tokens ----------------------------------------------------------------------------


def _token(env: Env, cid: str) -> str:
    ciphertext = env.store().get_connection(cid).token_ciphertext
    assert ciphertext
    return SecretBox(env.vars["ENTITY_SYNC_SECRET_KEY"]).decrypt(ciphertext)


def test_tokens_with_a_bom_are_cleaned_and_bad_characters_refused(tmp_path: Path) -> None:
    env = _env(f"sqlite:///{tmp_path}/store.db")
    added = env.cli("connections", "add", "bom", "--token-stdin", stdin="\ufeff" + TOKEN + "\n")
    assert added.returncode == 0, added.stderr
    assert _token(env, "bom") == TOKEN

    token_file = tmp_path / "token.txt"
    token_file.write_bytes(("\ufeff" + TOKEN + "-file\r\n").encode("utf-8"))
    from_file = env.cli("connections", "add", "file", "--token-file", str(token_file))
    assert from_file.returncode == 0, from_file.stderr
    assert _token(env, "file") == TOKEN + "-file"
    token_file.write_bytes((TOKEN + "-new\n").encode("utf-8-sig"))
    replaced = env.cli("connections", "set-token", "file", "--token-file", str(token_file))
    assert _token(env, "file") == TOKEN + "-new", replaced.stderr

    for n, bad in enumerate(
        [
            "secret\u200bzq9k",  # zero-width space
            "secret\x07zq9k",  # a control character
            "secret zq9k",  # whitespace inside
            "sécret-zq9k",  # latin-1, but not ASCII: httpx sends headers as ASCII
            "токен-zq9k",  # not latin-1 at all
        ]
    ):
        result = env.cli("connections", "add", f"bad{n}", "--token-stdin", stdin=bad + "\n")
        _refused(result, "token")
        assert "zq9k" not in result.stderr and "secret" not in result.stderr
        bad_file = tmp_path / f"bad{n}.txt"
        bad_file.write_text(bad + "\n", encoding="utf-8")
        result = env.cli("connections", "set-token", "bom", "--token-file", str(bad_file))
        _refused(result, "token")
        assert "zq9k" not in result.stderr
    assert _token(env, "bom") == TOKEN
    assert [c.id for c in env.store().list_connections()] == ["bom", "file"]

    (tmp_path / "latin1.txt").write_bytes(b"secret\xe9value\n")
    _refused(
        env.cli("connections", "set-token", "bom", "--token-file", str(tmp_path / "latin1.txt")),
        "not UTF-8",
    )
    _refused(
        env.cli("connections", "set-token", "bom", "--token-file", str(tmp_path / "missing.txt")),
        "--token-file",
    )


# -- rotate-key ------------------------------------------------------------------------


def test_rotate_key_never_reverts_a_concurrent_set_token(store_url: str) -> None:
    from worker.secrets import generate_key

    old, new = generate_key(), generate_key()
    store = _env(store_url).store()
    before = SecretBox(old)
    store.add_connection(
        Connection(
            id="c", name="c", entity_types=("assets",), token_ciphertext=before.encrypt("old-token")
        )
    )
    box = SecretBox(f"{new},{old}")
    # rotate-key reads the ciphertext and re-encrypts it ...
    read = store.get_connection("c").token_ciphertext
    assert read
    rotated = box.rotate(read)
    # ... a set-token lands in between ...
    store.set_token("c", box.encrypt("new-token"))
    # ... and the rotation's write must not bring the old token back.
    assert store.replace_ciphertexts(tokens={"c": (read, rotated)}, webhook_secrets={}) == ["c"]
    current = store.get_connection("c").token_ciphertext
    assert current and SecretBox(new).decrypt(current) == "new-token"
    # Unchanged ciphertexts are swapped.
    assert (
        store.replace_ciphertexts(tokens={"c": (current, box.rotate(current))}, webhook_secrets={})
        == []
    )


def test_rotate_key_command_rotates_again_what_changed_meanwhile(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from worker.ops.cli import tools as cli
    from worker.secrets import generate_key

    old, new = generate_key(), generate_key()
    env = _env(store_url, ENTITY_SYNC_SECRET_KEY=f"{new},{old}")
    store = env.store()
    store.add_connection(
        Connection(
            id="c",
            name="c",
            entity_types=("assets",),
            token_ciphertext=SecretBox(old).encrypt("old-token"),
        )
    )
    real = SqlStore.replace_ciphertexts
    calls: list[int] = []

    def interleaved(self: SqlStore, **kwargs: Any) -> list[str]:
        if not calls:  # a set-token (by an operator holding only the old key) right now
            self.set_token("c", SecretBox(old).encrypt("set-meanwhile"))
        calls.append(1)
        return real(self, **kwargs)

    monkeypatch.setattr(SqlStore, "replace_ciphertexts", interleaved)
    monkeypatch.setattr(cli, "store_for", lambda settings: store)
    assert cli.cmd_rotate_key(argparse.Namespace(), env.settings()) == 0
    assert len(calls) == 2
    current = store.get_connection("c").token_ciphertext
    assert current and SecretBox(new).decrypt(current) == "set-meanwhile"


def test_a_token_stored_before_the_checks_does_not_stop_the_halted_probes(
    store_url: str, test_redis: redis.Redis
) -> None:
    env = _env(store_url)
    box = SecretBox(env.vars["ENTITY_SYNC_SECRET_KEY"])
    store = env.store()
    for cid, token in (("a-zero-width", "tok\u200ben-zq9k"), ("b-fine", "token-b")):
        store.add_connection(
            Connection(
                id=cid, name=cid, entity_types=("assets",), token_ciphertext=box.encrypt(token)
            )
        )
    rt = Runtime(settings=env.settings())
    for cid in ("a-zero-width", "b-fine"):
        rt.breaker.halt(cid, "401")
    counts = probe(rt, lambda *a: None)  # raised UnicodeEncodeError for everyone before
    assert counts["halted_probed"] == 2
