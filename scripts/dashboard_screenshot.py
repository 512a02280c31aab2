"""Take docs/dashboard.png: a fleet of 1,000 connections with a pair in every state.

    .venv/bin/python scripts/dashboard_screenshot.py [--out docs/dashboard.png]
        [--redis-url redis://127.0.0.1:6379/14] [--connections 1000]

The demo connections carry every state; the rest of the fleet is generated,
mostly healthy with a few problems sprinkled in, so the picture shows the
page as an operator of 1,000 connections sees it: problems first.

Needs Redis and Debian's chromium (``apt-get install chromium``). The store is
a throwaway SQLite file; the demo connections' breaker keys in Redis are reset
before and after, and nothing else there is touched. The Chromium helpers are
shared with ``tests/integration/ops/test_dashboard.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.ops.dashboard.server import Dashboard, DashboardServer  # noqa: E402
from worker.resilience.breaker import Breaker  # noqa: E402 (after the path fix above)
from worker.store import Connection, PageCommit, RecordRow, Run, SqlStore, open_store  # noqa: E402
from worker.timeutil import canonical  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,900",
    # The page fetches its data after load: give that virtual time to happen.
    "--virtual-time-budget=5000",
)


def find_chromium() -> str:
    """The Chromium binary (``$CHROMIUM`` or Debian's), or a RuntimeError saying how to get it."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "headless Chromium is needed (not found at $CHROMIUM or /usr/bin/chromium): "
        "apt-get update && apt-get install -y chromium"
    )


def run_chromium(url: str, *args: str, timeout_s: float = 90.0) -> str:
    """Run headless Chromium on ``url`` with extra flags; its stdout."""
    with tempfile.TemporaryDirectory(prefix="es-chromium-") as profile:
        done = subprocess.run(
            [find_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def screenshot(url: str, out: Path) -> None:
    """A PNG of the page as it looks once its data arrived."""
    out.parent.mkdir(parents=True, exist_ok=True)
    run_chromium(url, f"--screenshot={out.resolve()}")
    if not out.exists() or out.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise RuntimeError(f"chromium wrote no PNG at {out}")


def dump_dom(url: str) -> str:
    """The page's DOM, serialised after its script ran."""
    return run_chromium(url, "--dump-dom")


# -- a demo-like fleet -----------------------------------------------------------------

DEMO = {
    "acme-plant-3": ("Acme Plant 3", ("sites", "assets", "work-orders", "materials", "vendors")),
    "globex": ("Globex Refinery", ("sites", "assets", "work-orders")),
    "initech": ("Initech HQ", ("sites", "assets", "work-orders", "vendors", "users")),
    "northwind": ("Northwind Logistics", ("assets", "work-orders", "purchase-orders")),
    "umbrella": ("Umbrella Labs", ("sites", "assets", "materials", "purchase-orders")),
}


def _ago(minutes: float) -> str:
    return canonical(datetime.now(UTC) - timedelta(minutes=minutes))


def add_run(
    store: SqlStore,
    connection_id: str,
    entity_type: str,
    *,
    minutes_ago: float,
    status: str = "succeeded",
    records: int = 0,
    error: tuple[str, str] | None = None,
) -> str:
    """A finished run ``minutes_ago``, with ``records`` records committed by it."""
    run_id = uuid.uuid4().hex
    store.record_run(
        Run(
            id=run_id,
            connection_id=connection_id,
            entity_type=entity_type,
            status=status,
            started_at=_ago(minutes_ago + 1),
            finished_at=_ago(minutes_ago),
            trigger="schedule",
            error_kind=error[0] if error else None,
            error_message=error[1] if error else None,
        )
    )
    if records:
        rows = tuple(
            RecordRow(f"{entity_type}-{i}", json.dumps({"id": i}), _ago(minutes_ago + 2), None)
            for i in range(records)
        )
        store.commit_page(PageCommit(connection_id, entity_type, run_id, rows, (), None))
    return run_id


def seed(store: SqlStore, breaker: Breaker) -> None:
    """Register the demo fleet and put one pair or more in every state."""
    for connection_id, (name, entity_types) in DEMO.items():
        breaker.reset(connection_id)
        store.add_connection(Connection(id=connection_id, name=name, entity_types=entity_types))
        for n, entity in enumerate(entity_types):
            # Stale: Acme's vendors last succeeded 70 minutes ago (3 x 15 min is 45).
            stale = (connection_id, entity) == ("acme-plant-3", "vendors")
            add_run(
                store,
                connection_id,
                entity,
                minutes_ago=70 if stale else 3 + n,
                records=40 + 37 * n,
            )
    for entity in ("sites", "assets", "work-orders"):
        add_run(
            store,
            "globex",
            entity,
            minutes_ago=1,
            status="failed",
            error=("auth", "401 Unauthorized: the token was revoked by the customer"),
        )
    breaker.halt("globex", "auth: 401 Unauthorized on GET /api/eam/assets")
    breaker.pause("northwind", 540, "rate_limited: 429, Retry-After 540 s")
    add_run(
        store,
        "initech",
        "assets",
        minutes_ago=0.5,
        status="failed",
        error=("unavailable", "503 Service Unavailable from the upstream gateway"),
    )
    breaker.force_open("initech", "assets", seconds=420, reason="unavailable: 5 failures in a row")
    breaker.force_open("initech", "work-orders", seconds=0.05, reason="unavailable: 503")
    time.sleep(0.2)
    breaker.admit("initech", "work-orders")  # the open time is over: this call is the probe
    breaker.block("initech", "vendors", "permission: 403 on GET /api/eam/vendors")


FLEET_WORDS = (
    "Harbor",
    "Summit",
    "Pioneer",
    "Cedar",
    "Atlas",
    "Beacon",
    "Granite",
    "Meridian",
    "Riverside",
    "Keystone",
    "Falcon",
    "Evergreen",
    "Northgate",
    "Ironwood",
    "Bluewater",
)
FLEET_KINDS = ("Plant", "Depot", "Mill", "Terminal", "Works", "Yard", "Hospital", "Campus")
FLEET_TYPES = ("sites", "assets", "work-orders", "materials")


def fleet_ids(count: int) -> list[str]:
    """Ids of the generated connections that fill the fleet up to ``count``."""
    return [f"site-{i:04}" for i in range(1, max(0, count - len(DEMO)) + 1)]


def seed_fleet(store: SqlStore, breaker: Breaker, count: int) -> list[str]:
    """Generated connections up to ``count`` in all: healthy but one in 100 (paused or failing)."""
    ids = fleet_ids(count)
    for n, connection_id in enumerate(ids):
        breaker.reset(connection_id)
        word, kind = FLEET_WORDS[n % len(FLEET_WORDS)], FLEET_KINDS[n % len(FLEET_KINDS)]
        name = f"{word} {kind} {n // len(FLEET_WORDS) + 1}"
        entity_types = FLEET_TYPES[: 2 + n % 3]
        store.add_connection(Connection(id=connection_id, name=name, entity_types=entity_types))
        for m, entity in enumerate(entity_types):
            add_run(store, connection_id, entity, minutes_ago=1 + (n + m) % 12, records=3)
        if n % 200 == 17:
            breaker.pause(connection_id, 300, "rate_limited: 429, Retry-After 300 s")
        elif n % 200 == 53:
            add_run(
                store,
                connection_id,
                "assets",
                minutes_ago=2,
                status="failed",
                error=("bad_request", "422 Unprocessable Entity: filter updatedAt rejected"),
            )
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--connections", type=int, default=1000, help="the fleet's size")
    args = parser.parse_args(argv)
    generated: list[str] = []
    breaker = Breaker(client=redis.Redis.from_url(args.redis_url, socket_connect_timeout=3))
    with tempfile.TemporaryDirectory(prefix="es-dashboard-") as tmp:
        store = open_store(f"sqlite:///{tmp}/store.db")
        try:
            seed(store, breaker)
            generated = seed_fleet(store, breaker, args.connections)
            server = DashboardServer("127.0.0.1", 0, Dashboard(store, breaker, 900.0)).start()
            try:
                screenshot(server.url + "#initech/assets", args.out)
            finally:
                server.close()
        finally:
            for connection_id in (*DEMO, *generated):
                breaker.reset(connection_id)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
