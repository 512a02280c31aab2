"""The `entity-sync` command line, run as a user would, in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.testing.sandbox import running_sandbox
from tests.support import Env, WorkerProcess

pytestmark = pytest.mark.integration

TOKEN = "cli-secret-token-4d9f"


def test_registry_sync_and_status(
    tmp_path: Path, test_redis: Any, worker_factory: list[WorkerProcess]
) -> None:
    with running_sandbox(preset="empty") as sandbox:
        sandbox.put_connection(TOKEN, {"seed": 2, "sizes": {"assets": 120, "sites": 4}})
        env = Env(store_url=f"sqlite:///{tmp_path}/store.db", upstream_url=sandbox.url)
        added = env.cli(
            "connections",
            "add",
            "plant-1",
            "--name",
            "Plant 1",
            "--entity",
            "assets",
            "--entity",
            "sites",
            "--token-stdin",
            stdin=TOKEN + "\n",
        )
        assert added.returncode == 0, added.stderr
        shown = env.cli("connections", "show", "plant-1")
        assert json.loads(shown.stdout)["has_token"] is True
        listing = env.cli("connections", "list", "--json")
        assert [c["id"] for c in json.loads(listing.stdout)] == ["plant-1"]
        assert TOKEN not in shown.stdout + listing.stdout
        stored = (tmp_path / "store.db").read_bytes()
        assert TOKEN.encode() not in stored, "the token is encrypted at rest"

        worker_factory.append(WorkerProcess(env, tmp_path / "worker.log").start())
        synced = env.cli("sync", "plant-1", "--wait", "--timeout", "60")
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert "succeeded" in synced.stdout

        status = json.loads(env.cli("status", "plant-1", "--json").stdout)
        assert {(s["entity_type"], s["records"], s["last_run_status"]) for s in status} == {
            ("assets", 120, "succeeded"),
            ("sites", 4, "succeeded"),
        }
        table = env.cli("status").stdout
        assert "plant-1" in table and "succeeded" in table

        # A new token: old one rejected upstream, new one works.
        sandbox.rotate(TOKEN, "cli-new-token")
        assert (
            env.cli("connections", "set-token", "plant-1", stdin="cli-new-token\n").returncode == 0
        )
        again = env.cli("sync", "plant-1", "--entity", "assets", "--full", "--wait")
        assert again.returncode == 0, again.stdout + again.stderr
        assert TOKEN not in (tmp_path / "worker.log").read_text()

        assert env.cli("connections", "remove", "plant-1").returncode == 0
        assert json.loads(env.cli("connections", "list", "--json").stdout) == []


def test_a_failed_run_exits_non_zero_with_the_reason(
    tmp_path: Path, test_redis: Any, worker_factory: list[WorkerProcess]
) -> None:
    with running_sandbox(preset="empty") as sandbox:
        sandbox.put_connection(
            TOKEN,
            {
                "seed": 2,
                "sizes": {"assets": 50},
                "scenarios": [{"name": "forbidden", "entity": "assets"}],
            },
        )
        env = Env(store_url=f"sqlite:///{tmp_path}/store.db", upstream_url=sandbox.url)
        env.add_connection("forbidden", TOKEN, ("assets",))
        worker_factory.append(WorkerProcess(env, tmp_path / "worker.log").start())
        result = env.cli("sync", "forbidden", "--wait", "--timeout", "60")
        assert result.returncode == 1
        assert "PERMISSION_DENIED" in result.stdout


def test_bad_input_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    env = Env(store_url=f"sqlite:///{tmp_path}/store.db", upstream_url="http://127.0.0.1:9")
    unknown = env.cli("sync", "no-such-connection")
    assert unknown.returncode == 2
    assert "unknown connection 'no-such-connection'" in unknown.stderr
    no_token = env.cli("connections", "add", "x", "--token-stdin", stdin="")
    assert no_token.returncode == 2 and "no token" in no_token.stderr
    bad_id = env.cli("connections", "add", "has space")
    assert bad_id.returncode == 2
    env.vars["ENTITY_SYNC_PAGE_SIZE"] = "500"
    bad_setting = env.cli("status")
    assert bad_setting.returncode == 2
    assert "ENTITY_SYNC_PAGE_SIZE" in bad_setting.stderr


def test_rotate_key_re_encrypts_tokens_and_webhook_secrets(tmp_path: Path) -> None:
    from worker.secrets import SecretBox, generate_key

    env = Env(
        store_url=f"sqlite:///{tmp_path}/store.db",
        upstream_url="http://127.0.0.1:9",
        ENTITY_SYNC_WEBHOOK_ALLOW_HTTP="true",
        ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE="true",
    )
    old = env.vars["ENTITY_SYNC_SECRET_KEY"]
    assert env.cli("connections", "add", "plant-1", "--token-stdin", stdin=TOKEN).returncode == 0
    hook = env.cli(
        "connections",
        "set-webhook",
        "plant-1",
        "http://127.0.0.1:9/hook",
        "--secret-stdin",
        stdin="whsec_rotate_me_0123\n",
    )
    assert hook.returncode == 0, hook.stderr
    new = generate_key()
    env.vars["ENTITY_SYNC_SECRET_KEY"] = f"{new},{old}"
    rotated = env.cli("rotate-key")
    assert rotated.returncode == 0 and "1 token(s) and 1 webhook secret(s)" in rotated.stdout
    env.vars["ENTITY_SYNC_SECRET_KEY"] = new  # the old key is gone now
    connection = env.store().get_connection("plant-1")
    assert connection.token_ciphertext and connection.webhook_secret_ciphertext
    assert SecretBox(new).decrypt(connection.token_ciphertext) == TOKEN
    assert SecretBox(new).decrypt(connection.webhook_secret_ciphertext) == "whsec_rotate_me_0123"


def test_webhook_urls_are_refused_when_unsafe(tmp_path: Path) -> None:
    env = Env(store_url=f"sqlite:///{tmp_path}/store.db", upstream_url="http://127.0.0.1:9")
    assert env.cli("connections", "add", "plant-1").returncode == 0
    for url, why in [
        ("http://hooks.example.com/x", "https is required"),
        ("https://127.0.0.1/x", "loopback"),
        ("https://10.1.2.3/x", "private"),
        ("https://user:pw@hooks.example.com/x", "user:password@"),
    ]:
        result = env.cli("connections", "set-webhook", "plant-1", url)
        assert result.returncode == 2, url
        assert "webhook URL refused" in result.stderr and why in result.stderr, result.stderr
