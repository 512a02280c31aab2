"""scripts/ensure_test_services.py, which `make test` runs before pytest.

It must pass where everything is there, start a local PostgreSQL cluster that
is installed but stopped, and say clearly what is missing otherwise (exit 1:
a missing service fails `make test`, it never skips tests).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support import POSTGRES_URL, ROOT

pytestmark = pytest.mark.integration

SCRIPT = ROOT / "scripts" / "ensure_test_services.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ENTITY_SYNC_TEST_REDIS_URL", None)  # the default: the tests' own redis-server
    env.pop("CHROMIUM", None)
    return env


def test_passes_where_every_service_is_there() -> None:
    done = run(base_env(), "--no-install")
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr


def test_names_each_missing_service_and_what_to_install(tmp_path: Path) -> None:
    env = base_env() | {
        # Nothing listens on this port, and no binary is on this PATH.
        "ENTITY_SYNC_TEST_POSTGRES_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/test",
        "PATH": str(tmp_path),
        "CHROMIUM": str(tmp_path / "no-such-chromium"),
    }
    done = run(env)
    assert done.returncode == 1
    err = done.stderr
    assert "no PostgreSQL answers at postgresql://postgres@127.0.0.1:" in err
    assert "apt-get install postgresql" in err
    assert "redis-server" in err and "apt-get install redis-server" in err
    assert "no-such-chromium is not an executable file" in err


def test_a_redis_url_given_must_answer() -> None:
    env = base_env() | {"ENTITY_SYNC_TEST_REDIS_URL": f"redis://127.0.0.1:{free_port()}/13"}
    done = run(env, "--no-install")
    assert done.returncode == 1
    assert "no Redis answers at redis://127.0.0.1:" in done.stderr


def test_missing_chromium_is_reported_not_installed_with_no_install(tmp_path: Path) -> None:
    # CHROMIUM names the browser: a wrong one is reported, never replaced by an install.
    env = base_env() | {"CHROMIUM": str(tmp_path / "absent")}
    done = run(env, "--no-install")
    assert done.returncode == 1
    assert "CHROMIUM=" in done.stderr and "not an executable" in done.stderr
    assert "installing" not in done.stdout


def _forward(listener: socket.socket, target: tuple[str, int], stop: threading.Event) -> None:
    """A tiny TCP forwarder: the 'started cluster' is the real one behind a new port."""

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            client, _ = listener.accept()
        except TimeoutError:
            continue
        upstream = socket.create_connection(target)
        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()


def test_starts_a_stopped_local_cluster_on_the_test_port(tmp_path: Path) -> None:
    """A cluster on the URL's port listed as down is started with pg_ctlcluster.

    pg_lsclusters and pg_ctlcluster are stand-ins on PATH (the machine's own
    cluster is shared and stays up); "starting" makes the real server answer
    on the stopped cluster's port through a forwarder.
    """
    port = free_port()
    started = tmp_path / "started"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_ins = {
        "pg_lsclusters": f'echo "15 main {port} down postgres /nowhere /nowhere.log"\n',
        "pg_ctlcluster": f'echo "$@" > {started}\n',
    }
    for name, body in stand_ins.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    real = urlsplit(POSTGRES_URL)
    url = POSTGRES_URL.replace(f":{real.port or 5432}/", f":{port}/", 1)
    stop = threading.Event()

    def start_when_asked() -> None:
        while not started.exists() and not stop.is_set():
            time.sleep(0.05)
        if stop.is_set():
            return
        listener = socket.create_server(("127.0.0.1", port))
        with listener:
            _forward(listener, (real.hostname or "127.0.0.1", real.port or 5432), stop)

    helper = threading.Thread(target=start_when_asked, daemon=True)
    helper.start()
    env = base_env() | {
        "ENTITY_SYNC_TEST_POSTGRES_URL": url,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    try:
        done = run(env, "--no-install")
    finally:
        stop.set()
        helper.join(5)
    assert started.read_text().split() == ["--skip-systemctl-redirect", "15", "main", "start"]
    assert "PostgreSQL 15/main is stopped; starting it" in done.stdout
    assert done.returncode == 0, done.stderr


def test_installs_what_is_missing_with_apt_get_as_root(tmp_path: Path) -> None:
    """As root with apt-get: one update, then Debian's redis-server and chromium.

    apt-get is a stand-in on PATH that records its calls and "installs" a
    package by putting an executable of that name next to itself.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "apt-get"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        'if [ "$1" = install ]; then\n'
        "  for last; do :; done\n"
        f"  binary={bin_dir}/$last\n"
        '  printf "#!/bin/sh\\n" > "$binary"; /bin/chmod +x "$binary"\n'
        "fi\n"
    )
    fake.chmod(0o755)
    env = base_env() | {"PATH": str(bin_dir)}  # no redis-server, no chromium
    done = run(env)
    if os.geteuid() != 0:
        assert done.returncode == 1
        assert "installed automatically only as root" in done.stderr
        return
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == [
        "update -qq",
        "install -y -qq redis-server",
        "install -y -qq chromium",
    ]
    assert "installing Debian's redis-server" in done.stdout
    assert "installing Debian's chromium" in done.stdout
