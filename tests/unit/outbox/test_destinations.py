"""Webhook URL validation against SSRF: every refusal class, with an injected resolver."""

from __future__ import annotations

import pytest

from worker.outbox.destinations import (
    InvalidWebhookUrl,
    address_problem,
    allowed_addresses,
    check_destination,
    system_resolve,
    validate_webhook_url,
)

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"
DNS = {
    "hooks.example.com": [PUBLIC_V4, PUBLIC_V6],
    "internal.example.com": ["10.1.2.3"],
    "metadata.example.com": ["169.254.169.254"],
    "mixed.example.com": [PUBLIC_V4, "127.0.0.1"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "v6loop.example.com": ["::1"],
    "empty.example.com": [],
}


def fake_resolve(host: str) -> list[str]:
    if host not in DNS:
        raise OSError(f"[Errno -2] Name or service not known: {host}")
    return DNS[host]


def never_resolve(host: str) -> list[str]:
    raise AssertionError(f"resolver called for {host}")


def validate(url: str, *, allow_http: bool = False, allow_private: bool = False) -> str:
    return validate_webhook_url(
        url, allow_http=allow_http, allow_private=allow_private, resolve=fake_resolve
    )


def refused(url: str, *, allow_http: bool = False, allow_private: bool = False) -> str:
    with pytest.raises(InvalidWebhookUrl) as caught:
        validate(url, allow_http=allow_http, allow_private=allow_private)
    assert isinstance(caught.value, ValueError)  # callers may catch plain ValueError
    return str(caught.value)


# --- accepted ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/entity-sync",
        "https://hooks.example.com:8443/a?b=c",
        "HTTPS://Hooks.Example.COM./x",
        f"https://{PUBLIC_V4}/hook",
        f"https://[{PUBLIC_V6}]/hook",
        f"https://[::ffff:{PUBLIC_V4}]/hook",  # mapped, and the IPv4 inside is public
        "https://[64:ff9b::5db8:d70e]/hook",  # NAT64 of a public address
    ],
)
def test_public_destinations_are_accepted(url: str) -> None:
    assert validate(url) == url


def test_url_is_trimmed() -> None:
    assert validate("  https://hooks.example.com/x \n") == "https://hooks.example.com/x"


def test_http_is_accepted_when_allowed() -> None:
    assert validate("http://hooks.example.com/x", allow_http=True) == "http://hooks.example.com/x"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost:8000/hook",
        "http://internal.example.com/hook",
        "http://[::1]:9000/",
    ],
)
def test_private_destinations_are_accepted_when_allowed(url: str) -> None:
    assert validate(url, allow_http=True, allow_private=True) == url


def test_allow_private_skips_dns_at_validation() -> None:
    url = "https://not-in-dns.example.com/"
    assert validate_webhook_url(url, allow_http=False, allow_private=True, resolve=never_resolve)


# --- refused: the shape of the URL ---------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/x",
        "file:///etc/passwd",
        "gopher://hooks.example.com:70/",
        "javascript:alert(1)",
        "hooks.example.com/x",
        "//hooks.example.com/x",
        "",
    ],
)
def test_schemes_other_than_http_are_refused(url: str) -> None:
    assert "https://" in refused(url)


def test_http_without_allow_http_names_the_setting() -> None:
    message = refused("http://hooks.example.com/x")
    assert message == (
        "https is required; set ENTITY_SYNC_WEBHOOK_ALLOW_HTTP=true for local development"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://user@hooks.example.com/",
        "https://user:pass@hooks.example.com/",
        "https://:@hooks.example.com/",
        "https://hooks.example.com@127.0.0.1/",
    ],
)
def test_userinfo_is_refused(url: str) -> None:
    message = refused(url, allow_private=True)
    assert "user:password@" in message
    assert "pass" not in message.replace("password", "")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https:///path", "needs a host"),
        ("https://hooks.example.com:99999/", "port"),
        ("https://hooks.example.com:abc/", "port"),
        ("https://[fe80::1%25eth0]/", "zone"),
        ("https://b\u00fccher.example/", "xn--"),
        ("https://hooks_example.com/", "not a valid host name"),
        ("https://hooks.example.com/a b", "spaces"),
        ("https://hooks.example.com/\x00", "control"),
        ("https://hooks.example.com/" + "a" * 2100, "at most"),
    ],
)
def test_malformed_urls_are_refused(url: str, words: str) -> None:
    assert words in refused(url, allow_private=True)


@pytest.mark.parametrize(
    "host", ["127.1", "0x7f000001", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "10.1"]
)
def test_numeric_hosts_that_are_not_canonical_ips_are_refused(host: str) -> None:
    # inet_aton and some URL parsers read all of these as 127.0.0.1 or 10.0.0.1.
    assert "numeric host" in refused(f"https://{host}/", allow_private=True)


# --- refused: where the host points ----------------------------------------------------


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("[::1]", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("[fc00::1]", "private"),
        ("169.254.169.254", "link-local"),
        ("[fe80::1]", "link-local"),
        ("224.0.0.1", "multicast"),
        ("[ff02::1]", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("[::]", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("100.64.0.1", "not publicly routable"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::ffff:10.0.0.1]", "private"),
        ("[::ffff:169.254.169.254]", "link-local"),
        ("[64:ff9b::7f00:1]", "loopback"),
        ("[2002:7f00:1::1]", "loopback (inside a 6to4 address)"),
        ("[fec0::1]", "site-local"),
    ],
)
def test_ip_literals_that_are_not_public_are_refused(host: str, kind: str) -> None:
    message = refused(f"https://{host}/hook")
    assert f"is {kind}" in message
    assert "ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE" in message


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "api.localhost", "x.y.localhost"])
def test_localhost_names_are_refused_without_dns(host: str) -> None:
    with pytest.raises(InvalidWebhookUrl, match="loopback"):
        validate_webhook_url(
            f"https://{host}/", allow_http=False, allow_private=False, resolve=never_resolve
        )


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("internal.example.com", "resolves to 10.1.2.3, which is private"),
        ("metadata.example.com", "resolves to 169.254.169.254, which is link-local"),
        ("mixed.example.com", "resolves to 127.0.0.1, which is loopback"),
        ("mapped.example.com", "resolves to ::ffff:127.0.0.1, which is loopback"),
        ("v6loop.example.com", "resolves to ::1, which is loopback"),
    ],
)
def test_names_resolving_to_forbidden_addresses_are_refused(host: str, words: str) -> None:
    assert words in refused(f"https://{host}/hook")


@pytest.mark.parametrize("host", ["nowhere.example.com", "empty.example.com"])
def test_names_that_do_not_resolve_are_refused(host: str) -> None:
    assert "does not resolve" in refused(f"https://{host}/hook")


def test_messages_name_the_host_not_the_url() -> None:
    message = refused("https://internal.example.com/hook?token=s3cr3t")
    assert "s3cr3t" not in message
    assert "internal.example.com" in message


# --- the send-time and connect-time checks ------------------------------------------------


def test_check_destination_does_no_dns_and_returns_the_host() -> None:
    # Names are checked by the connector when it connects; only static rules here.
    assert (
        check_destination("https://Internal.Example.com/x", allow_http=False, allow_private=False)
        == "internal.example.com"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/",
        "https://u:p@hooks.example.com/",
        "https://127.0.0.1/",
        "https://[::ffff:10.0.0.1]/",
        "https://localhost/",
        "https://2130706433/",
    ],
)
def test_check_destination_applies_the_static_rules(url: str) -> None:
    with pytest.raises(InvalidWebhookUrl):
        check_destination(url, allow_http=False, allow_private=False)


def test_allowed_addresses_returns_every_public_answer() -> None:
    got = allowed_addresses("hooks.example.com", allow_private=False, resolve=fake_resolve)
    assert got == [PUBLIC_V4, PUBLIC_V6]


def test_allowed_addresses_refuses_if_any_answer_is_private() -> None:
    with pytest.raises(InvalidWebhookUrl, match="127.0.0.1"):
        allowed_addresses("mixed.example.com", allow_private=False, resolve=fake_resolve)


def test_allowed_addresses_with_allow_private_returns_answers_as_they_are() -> None:
    got = allowed_addresses("mixed.example.com", allow_private=True, resolve=fake_resolve)
    assert got == [PUBLIC_V4, "127.0.0.1"]


def test_allowed_addresses_passes_resolution_failures_on_as_os_errors() -> None:
    with pytest.raises(OSError):
        allowed_addresses("nowhere.example.com", allow_private=False, resolve=fake_resolve)
    with pytest.raises(OSError):
        allowed_addresses("empty.example.com", allow_private=True, resolve=fake_resolve)


def test_allowed_addresses_takes_ip_literals_without_dns() -> None:
    assert allowed_addresses(PUBLIC_V4, allow_private=False, resolve=never_resolve) == [PUBLIC_V4]
    with pytest.raises(InvalidWebhookUrl):
        allowed_addresses("10.0.0.1", allow_private=False, resolve=never_resolve)


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        (PUBLIC_V4, None),
        (PUBLIC_V6, None),
        ("8.8.8.8", None),
        ("::ffff:8.8.8.8", None),
        ("198.18.0.1", "private"),  # benchmarking range
        ("192.0.2.1", "private"),  # documentation range
        ("not-an-ip", "not an IP address"),
    ],
)
def test_address_problem_table(address: str, problem: str | None) -> None:
    assert address_problem(address) == problem


def test_system_resolver_resolves_localhost_to_loopback() -> None:
    addresses = system_resolve("localhost")
    assert addresses
    assert all(address_problem(address) == "loopback" for address in addresses)
