"""Make sure what `make test` needs is here before pytest starts.

- PostgreSQL answers at ENTITY_SYNC_TEST_POSTGRES_URL (default
  postgresql://postgres@127.0.0.1:5432/test): a local cluster on that port
  that is installed but stopped is started (``pg_ctlcluster``).
- The tests start a ``redis-server`` of their own (tests/support.py), so the
  binary must be on PATH, unless ENTITY_SYNC_TEST_REDIS_URL names a Redis,
  which must then answer.
- Headless Chromium for the dashboard tests ($CHROMIUM, else ``chromium`` on
  PATH, which Debian's package puts in /usr/bin).

Where a binary is missing and this runs as root on a machine with apt-get,
Debian's package is installed (``redis-server``, ``chromium``); otherwise, or
with ``--no-install``, it says what to install. Exit status 0 when everything
is there, 1 otherwise: a missing service fails the tests, it never skips them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import psycopg
import redis

POSTGRES_URL = os.environ.get(
    "ENTITY_SYNC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("ENTITY_SYNC_TEST_REDIS_URL", "")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", None, ""}


@dataclass
class Apt:
    """Installs Debian packages when allowed; runs ``apt-get update`` once."""

    allowed: bool
    updated: bool = False
    installed: list[str] = field(default_factory=list)

    def usable(self) -> bool:
        return self.allowed and os.geteuid() == 0 and shutil.which("apt-get") is not None

    def install(self, package: str) -> bool:
        if not self.usable():
            return False
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        print(f"test services: installing Debian's {package}", flush=True)
        if not self.updated:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
            self.updated = True
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", package],
            env=env,
            check=False,
        )
        if done.returncode == 0:
            self.installed.append(package)
        return done.returncode == 0


def postgres_answers(url: str) -> str | None:
    """None when PostgreSQL answers at ``url``, else why not."""
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def stopped_local_clusters(port: int) -> list[tuple[str, str]]:
    """(version, name) of the Debian clusters on ``port`` that are down."""
    if shutil.which("pg_lsclusters") is None:
        return []
    out = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False
    ).stdout
    found = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[2] == str(port) and cols[3].startswith("down"):
            found.append((cols[0], cols[1]))
    return found


def ensure_postgres(url: str) -> str | None:
    why = postgres_answers(url)
    if why is None:
        return None
    parts = urlsplit(url)
    port = parts.port or 5432
    if parts.hostname in LOCAL_HOSTS:
        clusters = stopped_local_clusters(port)
        for version, name in clusters:
            print(f"test services: PostgreSQL {version}/{name} is stopped; starting it", flush=True)
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"],
                check=False,
            )
        if clusters:
            deadline = time.monotonic() + 30
            while (why := postgres_answers(url)) is not None and time.monotonic() < deadline:
                time.sleep(0.3)
            if why is None:
                return None
        elif shutil.which("pg_ctlcluster") is None and shutil.which("postgres") is None:
            return (
                f"no PostgreSQL answers at {url} ({why}) and no PostgreSQL server is installed.\n"
                "  Install one (Debian: `apt-get install postgresql`), allow local trust auth "
                "and create the database:\n"
                "  `createdb -U postgres test`; or point ENTITY_SYNC_TEST_POSTGRES_URL at one."
            )
    return (
        f"no PostgreSQL answers at {url} ({why}).\n"
        f"  Start it (Debian: `pg_ctlcluster <version> main start`), check that database "
        f"{parts.path.lstrip('/') or 'test'!r} exists, or set ENTITY_SYNC_TEST_POSTGRES_URL."
    )


def ensure_redis(url: str, apt: Apt) -> str | None:
    if url:  # a Redis of the caller's choosing: it must answer
        try:
            redis.Redis.from_url(url, socket_connect_timeout=3).ping()
            return None
        except redis.RedisError as exc:
            return f"no Redis answers at {url} (ENTITY_SYNC_TEST_REDIS_URL): {exc}"
    if shutil.which("redis-server"):
        return None
    if apt.install("redis-server") and shutil.which("redis-server"):
        return None
    return (
        "the tests start a redis-server of their own, and none is on PATH.\n"
        "  Install it (Debian: `apt-get install redis-server`; macOS: `brew install redis`), "
        "or set ENTITY_SYNC_TEST_REDIS_URL to a Redis the tests may flush (database 13 and 15)."
    )


def find_chromium() -> str | None:
    named = os.environ.get("CHROMIUM")
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("chromium")  # Debian's package: /usr/bin/chromium


def ensure_chromium(apt: Apt) -> str | None:
    if find_chromium():
        return None
    named = os.environ.get("CHROMIUM")
    if named:
        return f"CHROMIUM={named} is not an executable file (the dashboard tests need it)."
    if apt.install("chromium") and find_chromium():
        return None
    return (
        "the dashboard tests need headless Chromium, and there is no `chromium` on PATH.\n"
        "  Install it (Debian: `apt-get install chromium`), or set CHROMIUM to a Chromium binary."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-install", action="store_true", help="only report what is missing; install nothing"
    )
    args = parser.parse_args(argv)
    apt = Apt(allowed=not args.no_install)
    problems = [
        p
        for p in (ensure_postgres(POSTGRES_URL), ensure_redis(REDIS_URL, apt), ensure_chromium(apt))
        if p is not None
    ]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        if not apt.usable() and not args.no_install:
            print(
                "  (packages are installed automatically only as root on a machine with apt-get)",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
