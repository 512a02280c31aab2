"""``python -m bench.receiver_sockets``: the upstream-webhook receiver under hostile sockets.

Starts ``entity-sync receiver`` as it is run (its own process, a SQLite store,
no broker: the publish fails fast and the sweep would send it), opens a crowd
of idle, trickling and fat-header sockets (harness/testing/slow_clients.py),
then sends signed events one after another (``--spacing`` apart), each with the unified API's 10 s
patience, and reports: signed events answered 2xx, the crowd's sockets held
open, the receiver's resident memory before and at its peak, and the log lines
it wrote. One JSON line per run on stdout.

    python -m bench.receiver_sockets --idle 1000 --trickle 64 --fat 28 --signed 20
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from harness.testing.slow_clients import Crowd

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-upstream-secret-0123456789"
PATH = "/upstream/webhooks"
RECEIVER = [sys.executable, "-m", "worker.ops.cli", "receiver", "--port", "0"]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (no dependency)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def signed_event() -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": "sync.completed",
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "connection_id": "09000000000042",
            "data": {"entity_types": ["assets"], "sync_status": "done"},
        }
    ).encode()
    mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Webhook-Signature": f"sha256={mac}"}


def send_one(host: str, port: int) -> tuple[int, float]:
    """(status or 0 when unanswered within 10 s, seconds taken)."""
    body, headers = signed_event()
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", PATH, body=body, headers=headers)
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        status = 0
    finally:
        conn.close()
    return status, time.monotonic() - started


def run(args: argparse.Namespace) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-receiver-"))
    env = {
        **os.environ,
        "ENTITY_SYNC_STORE_URL": f"sqlite:///{workdir}/store.db",
        "ENTITY_SYNC_REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens: publish fails fast
        "ENTITY_SYNC_UPSTREAM_WEBHOOK_SECRET": SECRET,
        "ENTITY_SYNC_LOG_LEVEL": "INFO",
    }
    log_path = workdir / "receiver.log"
    with log_path.open("wb") as log:
        command = shlex.split(args.command) if args.command else RECEIVER
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter, or the caller's command
            command,
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("RECEIVER LISTENING "):
            raise RuntimeError(f"the receiver did not start: {line!r} {log_path.read_text()}")
        host, port = "127.0.0.1", int(line.split()[-1].split(":")[2].split("/")[0])
        baseline = rss_mb(proc.pid)
        peak, held = [baseline], [0]
        done = threading.Event()
        crowd = Crowd(host, port, idle=args.idle, trickle=args.trickle, fat=args.fat)

        def sample() -> None:
            while not done.wait(0.2):
                peak.append(rss_mb(proc.pid))
                held.append(crowd.stats().open)

        threading.Thread(target=sample, daemon=True).start()
        crowd.start()
        time.sleep(args.settle)
        answers = []
        for _ in range(args.signed):
            answers.append(send_one(host, port))
            time.sleep(args.spacing)
        after = crowd.stats()
        crowd.stop()
        done.set()
        answered = [s for s, _ in answers if 200 <= s < 300]
        lines = log_path.read_text(errors="replace").splitlines()
        return {
            "idle": args.idle,
            "trickle": args.trickle,
            "fat": args.fat,
            "crowd_open_max": max(held),
            "crowd_connections_made": after.connected,
            "crowd_closed_by_server": after.closed_by_server,
            "signed_sent": args.signed,
            "signed_answered_2xx": len(answered),
            "slowest_signed_s": round(max((t for _, t in answers), default=0.0), 2),
            "rss_baseline_mb": round(baseline, 1),
            "rss_peak_mb": round(max(peak), 1),
            "log_lines": len(lines),
            "warning_lines": sum("WARNING" in x for x in lines),
        }
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver_sockets", description=__doc__)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--trickle", type=int, default=64)
    parser.add_argument("--fat", type=int, default=28)
    parser.add_argument("--signed", type=int, default=20)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds before the first event")
    parser.add_argument(
        "--command",
        help="start this instead of `entity-sync receiver` (another design to compare; it "
        "must print RECEIVER LISTENING <url> first and take the same environment)",
    )
    parser.add_argument("--spacing", type=float, default=0.5, help="seconds between two events")
    print(json.dumps(run(parser.parse_args(argv))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
