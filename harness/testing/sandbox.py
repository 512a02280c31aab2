"""A sandbox in a subprocess, for tests: ``with running_sandbox(...) as sb: ...``.

The sandbox runs as ``python -m harness.sandbox --port 0`` so tests talk to it
over real HTTP exactly as the worker will, and a hung handler cannot hang the
test process. The handle wraps the control API.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

_READY = "SANDBOX LISTENING "
# The directory holding the ``worker`` package, so the child imports this tree.
_ROOT = Path(__file__).resolve().parents[2]


class SandboxError(RuntimeError):
    """The sandbox did not start, or a control call failed."""


class SandboxHandle:
    """The running sandbox: its URL and the control API as methods."""

    def __init__(self, url: str, process: subprocess.Popen[str]) -> None:
        self.url = url
        self.process = process
        self._control = httpx.Client(base_url=url, timeout=httpx.Timeout(30.0))

    def api(self, token: str, *, timeout: float = 10.0) -> httpx.Client:
        """An httpx client for the unified API with the token's bearer header."""
        return httpx.Client(
            base_url=self.url, timeout=timeout, headers={"Authorization": f"Bearer {token}"}
        )

    def put_config(self, config: dict[str, Any]) -> None:
        """Replace the whole config (fresh data, clocks, counters and stats)."""
        self._call("PUT", "/_sandbox/config", config)

    def put_connection(self, token: str, spec: dict[str, Any]) -> None:
        """Add or replace one connection."""
        self._call("PUT", f"/_sandbox/connections/{token}", spec)

    def mutate(self, token: str, **batch: Any) -> dict[str, Any]:
        """Apply one mutation batch now; returns the changes by entity type."""
        changes: dict[str, Any] = self._call(
            "POST", f"/_sandbox/connections/{token}/mutate", batch
        )["changes"]
        return changes

    def set_scenarios(self, token: str, scenarios: list[dict[str, Any]]) -> None:
        """Replace a connection's scenarios and restart their clock."""
        self._call("POST", f"/_sandbox/connections/{token}/scenarios", scenarios)

    def rotate(self, token: str, new_token: str) -> None:
        """Re-authorise: the connection now answers only to ``new_token``."""
        self._call("POST", f"/_sandbox/connections/{token}/rotate", {"new_token": new_token})

    def connection(self, token: str) -> dict[str, Any]:
        """A connection's spec and fault state."""
        result: dict[str, Any] = self._call("GET", f"/_sandbox/connections/{token}")
        return result

    def stats(self) -> dict[str, Any]:
        """Request statistics (see README.md)."""
        result: dict[str, Any] = self._call("GET", "/_sandbox/stats")
        return result

    def token_stats(self, token: str) -> dict[str, Any]:
        """The statistics of one token (empty counters when it made no request)."""
        found: dict[str, Any] = self.stats()["tokens"].get(token, {"total": 0})
        return found

    def reset_stats(self) -> None:
        """Forget all statistics."""
        self._call("POST", "/_sandbox/stats/reset")

    def set_webhooks(self, url: str, secret: str) -> None:
        """Send the unified API's webhooks to ``url``, signed with ``secret``."""
        self._call("PUT", "/_sandbox/webhooks", {"url": url, "secret": secret})

    def emit(self, token: str, event_type: str, data: dict[str, Any], **fields: Any) -> Any:
        """Send one webhook of a connection now: ``{"event": ..., "status": ...}``."""
        body = {"type": event_type, "data": data, **fields}
        return self._call("POST", f"/_sandbox/connections/{token}/webhooks", body)

    def revoke(self, token: str) -> dict[str, Any] | None:
        """The customer's credentials change: 401 from now on, and the webhook saying so."""
        event: dict[str, Any] | None = self._call("POST", f"/_sandbox/connections/{token}/revoke")[
            "event"
        ]
        return event

    def webhooks_sent(self) -> list[dict[str, Any]]:
        """Webhooks sent so far: id, type, status, attempt."""
        sent: list[dict[str, Any]] = self._call("GET", "/_sandbox/webhooks")["sent"]
        return sent

    def truth(self, token: str, entity: str) -> list[dict[str, Any]]:
        """Every current record of an entity type, deleted ones included."""
        records: list[dict[str, Any]] = self._call(
            "GET", f"/_sandbox/connections/{token}/records/{entity}"
        )["data"]
        return records

    def close(self) -> None:
        """Stop the process and release the control client."""
        self._control.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        content = None if body is None else json.dumps(body).encode()
        response = self._control.request(method, path, content=content)
        if response.status_code != 200:
            raise SandboxError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()


@contextmanager
def running_sandbox(
    config: dict[str, Any] | None = None,
    preset: str | None = None,
    *,
    startup_timeout: float = 30.0,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
) -> Iterator[SandboxHandle]:
    """Start a sandbox subprocess on a free port; stop it on exit.

    ``config`` (the JSON format of README.md) wins over ``preset``; with
    neither, the ``demo`` preset is served.
    """
    with tempfile.TemporaryDirectory(prefix="sandbox-") as tmp:
        args = [sys.executable, "-m", "harness.sandbox", "--host", "127.0.0.1", "--port", "0"]
        if config is not None:
            path = Path(tmp) / "config.json"
            path.write_text(json.dumps(config), encoding="utf-8")
            args += ["--config", str(path)]
        else:
            args += ["--preset", preset or "demo"]
        if webhook_url is not None and webhook_secret is not None:
            secret_file = Path(tmp) / "webhook-secret"
            secret_file.write_text(webhook_secret, encoding="utf-8")
            args += ["--webhook-url", webhook_url, "--webhook-secret-file", str(secret_file)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            args, stdout=subprocess.PIPE, text=True, env=env, cwd=str(_ROOT)
        )
        handle: SandboxHandle | None = None
        try:
            url = _await_listening(process, startup_timeout)
            handle = SandboxHandle(url, process)
            yield handle
        finally:
            if handle is not None:
                handle.close()
            elif process.poll() is None:
                process.kill()
                process.wait(timeout=5)
            if process.stdout is not None:
                process.stdout.close()


def _await_listening(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        raise SandboxError(f"sandbox did not start within {timeout}s") from None
    if line is None or not line.startswith(_READY):
        raise SandboxError(f"sandbox failed to start (exit code {process.poll()}): {line!r}")
    return line[len(_READY) :].strip()


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    # Reads every stdout line so the child can never block on a full pipe.
    try:
        for line in stream:
            lines.put(line)
    except (OSError, ValueError):
        pass  # the stream was closed while the process was being stopped
    lines.put(None)
