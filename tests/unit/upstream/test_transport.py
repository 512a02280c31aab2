"""The one transport uses public httpx and httpcore API only, and maps their errors."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from worker.upstream.transport import DeadlineTransport, environment_proxies

ROOT = Path(__file__).resolve().parents[3]
# httpx's private modules and the private attributes of its transports and clients.
PRIVATE = re.compile(r"httpx\._|httpcore\._|\._pool\b|\._transport\b|\._mounts\b")


def test_no_module_reaches_into_private_httpx() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for package in ("worker", "tasks")
        for path in sorted((ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert offenders == []


def test_a_refused_connection_is_an_httpx_connect_error() -> None:
    transport = DeadlineTransport(deadline_s=2.0, connect_to=lambda host: ["127.0.0.1"])
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.ConnectError):
        client.get("http://example.invalid:9/")  # connect_to pins the address; nothing on 9


def test_a_refusing_policy_keeps_its_reason_in_the_cause_chain() -> None:
    def refuse(host: str) -> list[str]:
        raise ValueError(f"{host} is private")

    transport = DeadlineTransport(deadline_s=2.0, connect_to=refuse)
    with (
        httpx.Client(transport=transport) as client,
        pytest.raises(httpx.ConnectError, match="private") as caught,
    ):
        client.get("http://internal.example/")
    cause: BaseException | None = caught.value
    while cause is not None and not isinstance(cause, ValueError):
        cause = cause.__cause__ or cause.__context__
    assert isinstance(cause, ValueError)


def test_proxies_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,::1,localhost,.internal")
    assert environment_proxies() == {
        "https://": "http://proxy.local:3128",
        "all://127.0.0.1": None,
        "all://[::1]": None,
        "all://localhost": None,
        "all://*.internal": None,
    }
    monkeypatch.setenv("NO_PROXY", "*")
    assert environment_proxies() == {}
