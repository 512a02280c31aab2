"""Setting webhooks from the command line: URLs off argv, secrets long enough, the shared secret.

Issue 19, finding 9 (its webhook part): a webhook URL can carry a token, so
it can come on stdin or from a file instead of argv, where `ps` shows it; a
signing secret has at least 16 bytes, per connection and globally; and a
connection signed with the global secret, which every such connection
shares, is pointed out when it is set. Each test runs the real CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support import Env
from worker.secrets import SecretBox
from worker.timeutil import canonical

pytestmark = pytest.mark.integration

TOKEN_IN_URL = "q-t0ken-9f3e1c"
URL = f"http://127.0.0.1:9/hooks/entity-sync?token={TOKEN_IN_URL}"
GLOBAL_SECRET = "whsec_global_secret_0123456789"  # noqa: S105 - a throwaway test secret
OWN_SECRET = "whsec_own_secret_0123456789ab"  # noqa: S105 - a throwaway test secret


def _env(tmp_path: Path, **extra: str) -> Env:
    return Env(
        store_url=f"sqlite:///{tmp_path}/store.db",
        upstream_url="http://127.0.0.1:9",
        ENTITY_SYNC_WEBHOOK_ALLOW_HTTP="true",
        ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE="true",
        **extra,
    )


def test_a_url_read_from_stdin_never_shows_in_the_process_list(tmp_path: Path) -> None:
    env = _env(tmp_path, ENTITY_SYNC_WEBHOOK_SECRET=GLOBAL_SECRET)
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "worker.ops.cli", "connections", "add", "c", "--webhook-url-stdin"],
        env=env.process_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # What `ps` shows, read while the command is running.
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
        time.sleep(0.2)
        cmdline += Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
    finally:
        out, err = process.communicate(URL + "\n", timeout=120)
    assert process.returncode == 0, err
    assert "--webhook-url-stdin" in cmdline and TOKEN_IN_URL not in cmdline
    assert TOKEN_IN_URL not in out + err
    assert env.store().get_connection("c").webhook_url == URL


def test_set_webhook_reads_the_url_from_a_file_and_the_secret_from_stdin(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert env.cli("connections", "add", "c").returncode == 0
    url_file = tmp_path / "url"
    url_file.write_text("\ufeff" + URL + "\r\n")  # as a Windows editor saves it
    done = env.cli(
        "connections",
        "set-webhook",
        "c",
        "--webhook-url-file",
        str(url_file),
        "--secret-stdin",
        stdin=OWN_SECRET + "\n",
    )
    assert done.returncode == 0, done.stderr
    assert TOKEN_IN_URL not in done.stdout + done.stderr
    connection = env.store().get_connection("c")
    assert connection.webhook_url == URL
    assert connection.webhook_secret_ciphertext
    box = SecretBox(env.vars["ENTITY_SYNC_SECRET_KEY"])
    assert box.decrypt(connection.webhook_secret_ciphertext) == OWN_SECRET


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("--webhook-url-stdin", "--secret-stdin"), URL, "both read stdin"),
        ((URL, "--webhook-url-file", "x"), None, "one way only"),
        (("--webhook-url-file", "/nonexistent/url"), None, "cannot read /nonexistent/url"),
        (("--webhook-url-stdin",), "\n", "no webhook URL in stdin"),
        ((), None, "give the webhook URL"),
    ],
)
def test_a_url_given_wrongly_is_refused_and_nothing_changes(
    tmp_path: Path, args: tuple[str, ...], stdin: str | None, message: str
) -> None:
    env = _env(tmp_path)
    assert env.cli("connections", "add", "c").returncode == 0
    refused = env.cli("connections", "set-webhook", "c", *args, stdin=stdin)
    assert refused.returncode == 2, refused.stderr
    assert message in refused.stderr and "Traceback" not in refused.stderr
    assert TOKEN_IN_URL not in refused.stderr
    assert env.store().get_connection("c").webhook_url is None


def test_connections_add_takes_the_url_from_a_file_but_not_with_the_token_on_stdin_too(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    url_file = tmp_path / "url"
    url_file.write_text(URL)
    both = env.cli("connections", "add", "x", "--webhook-url-stdin", "--token-stdin", stdin=URL)
    assert both.returncode == 2 and "both read stdin" in both.stderr
    added = env.cli(
        "connections", "add", "c", "--webhook-url-file", str(url_file), "--token-stdin",
        stdin="tok-123\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert env.store().get_connection("c").webhook_url == URL


@pytest.mark.parametrize("secret", ["short", "whsec_15_bytes_"])
def test_a_per_connection_secret_under_16_bytes_is_refused(tmp_path: Path, secret: str) -> None:
    env = _env(tmp_path)
    assert env.cli("connections", "add", "c").returncode == 0
    refused = env.cli("connections", "set-webhook", "c", URL, "--secret-stdin", stdin=secret)
    assert refused.returncode == 2, refused.stderr
    assert "at least 16 bytes" in refused.stderr and secret not in refused.stderr
    connection = env.store().get_connection("c")
    assert connection.webhook_url is None and connection.webhook_secret_ciphertext is None
    sixteen = env.cli("connections", "set-webhook", "c", URL, "--secret-stdin", stdin="s" * 16)
    assert sixteen.returncode == 0, sixteen.stderr


def test_a_global_secret_under_16_bytes_is_a_settings_error(tmp_path: Path) -> None:
    env = _env(tmp_path, ENTITY_SYNC_WEBHOOK_SECRET="short")
    result = env.cli("status")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "ENTITY_SYNC_WEBHOOK_SECRET" in result.stderr
    assert "at least 16 bytes" in result.stderr
    assert "short" not in result.stderr
    # A short secret may still sign as the previous one, so a rotation away from it works.
    env.vars.update(
        ENTITY_SYNC_WEBHOOK_SECRET=GLOBAL_SECRET,
        ENTITY_SYNC_WEBHOOK_SECRET_PREVIOUS="short",
        ENTITY_SYNC_WEBHOOK_SECRET_PREVIOUS_UNTIL=canonical(datetime.now(UTC) + timedelta(days=1)),
    )
    assert env.cli("status").returncode == 0


def test_a_connection_signed_with_the_shared_secret_is_pointed_out_when_set(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path, ENTITY_SYNC_WEBHOOK_SECRET=GLOBAL_SECRET)
    shared = env.cli("connections", "add", "shared", "--webhook-url", URL)
    assert shared.returncode == 0
    assert "ENTITY_SYNC_WEBHOOK_SECRET, which every" in shared.stderr
    assert "forge" in shared.stderr
    own = env.cli("connections", "add", "own")
    assert own.returncode == 0 and "warning" not in own.stderr  # no URL, nothing to sign
    with_secret = env.cli(
        "connections", "set-webhook", "own", URL, "--secret-stdin", stdin=OWN_SECRET
    )
    assert with_secret.returncode == 0 and "warning" not in with_secret.stderr
    again = env.cli("connections", "set-webhook", "own", URL)  # keeps its own secret
    assert again.returncode == 0 and "warning" not in again.stderr
    assert (
        json.loads(env.cli("connections", "show", "shared").stdout)["has_own_webhook_secret"]
        is False
    )
    assert json.loads(env.cli("connections", "show", "own").stdout)["has_own_webhook_secret"]
