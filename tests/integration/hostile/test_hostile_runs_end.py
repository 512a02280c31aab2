"""Hostile answers and odd jobs end their runs with a classified reason, on both stores.

A real worker syncs from a local upstream that breaks the list contract
(ignores ``page`` inside a tie group; sends ``meta.per_page: -1``), from the
sandbox with a stored token no HTTP header can carry, and receives a job whose
``resume_from`` is out of the calendar's range. Each run ends in bounded time
with a kind and a message, its lease free, and ``sync --wait`` answers 1;
on the previous code the first two paged without end, the token's
UnicodeEncodeError quoted it into the log, and the job crashed its task.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from harness.testing.sandbox import SandboxHandle, running_sandbox
from tests.support import Env, WorkerProcess, wait_for
from worker.client import EntitySyncClient
from worker.coordination.lease import Leases
from worker.jobs import SYNC_ENTITY
from worker.secrets import SecretBox
from worker.store import Connection, RunStatus

pytestmark = pytest.mark.integration

STAMP = "2026-01-01T00:00:00Z"


# Records that really stopped runs (issue 11): a NUL in a name and a NaN that
# PostgreSQL's jsonb refuses, and the null-date sentinel with an offset that
# raised OverflowError out of the record check.
ODD_RECORDS = [
    {"key": "good", "updatedAt": STAMP, "name": "Pump 1"},
    {"key": "nul", "updatedAt": STAMP, "name": "Pump\u00002"},
    {"key": "nan", "updatedAt": STAMP, "name": "Pump 3", "rating": float("nan")},
    {"key": "null-date", "updatedAt": "0001-01-01T00:00:00+01:00", "name": "Pump 4"},
]


class HostileUpstream:
    """``/ties`` ignores ``page`` inside a tie group; ``/negative`` says per_page -1;
    ``/odd`` answers one short page of ``ODD_RECORDS``."""

    def __init__(self) -> None:
        self.requests = 0
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                upstream.requests += 1
                url = urlsplit(self.path)
                if url.path.endswith("/api/integrations/current"):
                    body: dict[str, Any] = {"data": {"sync_status": "ok"}}
                else:
                    per_page = int(parse_qs(url.query).get("per_page", ["10"])[0])
                    records = [{"key": f"k{i}", "updatedAt": STAMP} for i in range(per_page)]
                    if url.path.startswith("/odd/"):
                        records = ODD_RECORDS
                        meta = {"current_page": 1, "per_page": per_page, "total": len(records)}
                    elif url.path.startswith("/ties/"):
                        meta = {"current_page": 1, "per_page": per_page, "total": per_page * 3}
                    else:
                        meta = {"current_page": 1, "per_page": -1, "total": per_page}
                    body = {"data": records, "meta": meta}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(preset="empty") as handle:
        yield handle


def test_hostile_answers_and_odd_jobs_end_their_runs(
    store_url: str,
    sandbox: SandboxHandle,
    test_redis: Any,
    worker_factory: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    secret = uuid.uuid4().hex
    dirty_token = f"\ufefftok-{secret}\u200b"  # a BOM and a zero-width space, as pasted
    sandbox.put_connection(f"tok-{secret}", {"seed": 2, "sizes": {"assets": 5}})
    hostile = HostileUpstream()
    try:
        env = Env(store_url=store_url, upstream_url=sandbox.url, ENTITY_SYNC_PAGE_SIZE="10")
        store = env.store()
        box = SecretBox(env.vars["ENTITY_SYNC_SECRET_KEY"])
        for connection_id, upstream_url, token in [
            ("ties", f"{hostile.url}/ties", "tok-hostile-1"),
            ("negative", f"{hostile.url}/negative", "tok-hostile-2"),
            ("dirty-token", None, dirty_token),
            ("odd", f"{hostile.url}/odd", "tok-hostile-3"),
        ]:
            store.add_connection(
                Connection(
                    id=connection_id,
                    name=connection_id,
                    entity_types=("assets",),
                    token_ciphertext=box.encrypt(token),
                    upstream_url=upstream_url,
                )
            )
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        worker_factory.append(worker)

        ids = ["ties", "negative", "dirty-token", "odd"]
        with ThreadPoolExecutor(len(ids)) as pool:
            answers = dict(
                zip(
                    ids,
                    pool.map(lambda c: env.cli("sync", c, "--wait", "--timeout", "90"), ids),
                    strict=True,
                )
            )
        runs = {r.connection_id: r for r in store.recent_runs(limit=50)}
        leases = Leases(test_redis, ttl_s=60)
        expected = {
            "ties": ("bad_data", "ignores the page parameter"),
            "negative": ("bad_data", "meta.per_page is -1"),
            "dirty-token": ("auth", "cannot be sent in an HTTP header"),
        }
        for connection_id, (kind, words) in expected.items():
            answer, run = answers[connection_id], runs[connection_id]
            assert answer.returncode == 1, (connection_id, answer.stdout, answer.stderr)
            assert run.status == RunStatus.FAILED, (connection_id, run)
            assert run.error_kind == kind, (connection_id, run)
            assert words in (run.error_message or ""), (connection_id, run)
            assert leases.holder(connection_id, "assets") is None
        # Odd records: stored or quarantined (docs/records.md), and the run succeeds.
        odd = runs["odd"]
        assert answers["odd"].returncode == 0, answers["odd"]
        assert odd.status == RunStatus.SUCCEEDED, odd
        assert leases.holder("odd", "assets") is None
        assert hostile.requests < 200  # bounded, not a loop cut short by the timeout
        assert secret not in worker.log()
        assert secret not in json.dumps([r.error_message for r in runs.values()])

        # A job whose resume_from is past the calendar's end: a rejected run, not a crash.
        client = EntitySyncClient(env.vars["ENTITY_SYNC_REDIS_URL"])
        request_id = f"odd-{uuid.uuid4().hex[:8]}"
        client.send(
            SYNC_ENTITY,
            {
                "connection_id": "ties",
                "entity_type": "assets",
                "request_id": request_id,
                "resume_from": "9999-12-31T23:59:59-01:00",
            },
        )
        [rejected] = wait_for(
            lambda: store.runs_for_request(request_id), 60, "the rejected run", worker
        )
        assert rejected.status == RunStatus.REJECTED
        assert "outside years 1 to 9999" in (rejected.error_message or "")
        assert "raised unexpected" not in worker.log()  # no task crashed (Celery says so)
    finally:
        hostile.stop()
