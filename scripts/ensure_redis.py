"""Make sure a Redis answers at ENTITY_SYNC_REDIS_URL, for `make demo`.

If none answers on this machine: start a throwaway redis-server when the
binary exists, else `docker compose up -d redis` when Docker runs, else say
exactly what to install. Exit status 0 when Redis answers, 1 otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis

URL = os.environ.get("ENTITY_SYNC_REDIS_URL", "redis://127.0.0.1:6379/0")


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def wait_until_answers(url: str, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(url):
            return True
        time.sleep(0.2)
    return False


def main() -> int:
    if answers(URL):
        return 0
    parts = urlsplit(URL)
    local = parts.hostname in {"127.0.0.1", "localhost", "::1"}
    port = parts.port or 6379
    if local and shutil.which("redis-server"):
        var = Path("var")
        var.mkdir(exist_ok=True)
        print(f"no Redis at {URL}: starting a throwaway redis-server on port {port}")
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--pidfile",
                str(var.resolve() / "redis.pid"),
                "--logfile",
                str(var.resolve() / "redis.log"),
            ],
            check=True,
        )
        if wait_until_answers(URL):
            return 0
    elif (
        local
        and shutil.which("docker")
        and subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
    ):
        print(f"no Redis at {URL}: starting one with docker compose")
        subprocess.run(["docker", "compose", "up", "-d", "redis"], check=True)
        if wait_until_answers(URL, 60):
            return 0
    print(
        f"error: no Redis answers at {URL} (ENTITY_SYNC_REDIS_URL).\n"
        "Install one: `apt-get install redis-server` (Debian/Ubuntu), "
        "`brew install redis` (macOS), or run Docker and `docker compose up -d redis`.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
