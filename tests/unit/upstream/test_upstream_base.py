"""Which unified API a base URL names (worker/operator_input.py ``upstream_base``):
upstream connection ids are mapped per base URL, so spellings of one API must agree
and two APIs must not."""

from __future__ import annotations

import pytest

from worker.operator_input import upstream_base


@pytest.mark.parametrize(
    "spelling",
    [
        "https://api.example.com/v3",
        "https://api.example.com/v3/",
        "HTTPS://API.Example.COM/v3",
        "https://api.example.com:443/v3",
        "https://api.example.com.//v3//",
        "https://user:secret@api.example.com/v3?x=1#top",
    ],
)
def test_spellings_of_one_api_are_one_base(spelling: str) -> None:
    assert upstream_base(spelling) == "https://api.example.com/v3"


def test_what_names_another_api_stays_apart() -> None:
    bases = {
        upstream_base(url)
        for url in (
            "https://api.example.com/v3",
            "http://api.example.com/v3",  # another scheme: another listener
            "https://api.example.com:8443/v3",
            "https://api.example.com/v3/eu",  # another prefix behind one host
            "https://proxy.example.com/v3",
        )
    }
    assert len(bases) == 5


def test_credentials_never_reach_the_base() -> None:
    assert "secret" not in upstream_base("https://user:secret@api.example.com")
    assert upstream_base("http://[::1]:80/") == "http://[::1]"
    assert upstream_base("http://bücher.example/") == "http://xn--bcher-kva.example"
