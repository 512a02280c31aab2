"""Where webhooks may go, and the connector that enforces it (against SSRF).

A webhook URL is typed in by a customer, and the worker then POSTs to it from
inside our network. Without checks, ``http://169.254.169.254/`` (cloud
metadata), ``http://localhost:6379/`` or ``http://10.0.0.5/admin`` become
requests we make on the customer's behalf. Three layers, each cheap:

- ``validate_webhook_url``  at registration: scheme, no userinfo, a plain host,
                            and every address the host resolves to is public
- ``check_destination``     before each send: the same rules, no DNS
- ``guarded_transport``     at connect time: the one deadline transport
                            (``worker.upstream.transport``) with this module's
                            resolver policy: resolve the host once
                            (``allowed_addresses``), refuse if any address is
                            not public, connect to exactly those addresses

Checking the resolved address at the moment of connecting, and connecting to
that very address, is what defeats DNS rebinding (a name that resolves to a
public address when validated and to 127.0.0.1 when used); TLS still checks
the certificate against the name. Errors are ``InvalidWebhookUrl``, a
ValueError, so pydantic validators and CLI code can report them as they are;
messages name the host, never the whole URL (query strings carry tokens).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from functools import partial
from ssl import SSLContext
from urllib.parse import urlsplit

import httpx

from worker.upstream.transport import DeadlineTransport

__all__ = [
    "InvalidWebhookUrl",
    "Resolver",
    "address_problem",
    "allowed_addresses",
    "check_destination",
    "guarded_transport",
    "system_resolve",
    "validate_webhook_url",
]

Resolver = Callable[[str], list[str]]
"""host name -> IP address strings; raises OSError when the name does not resolve."""

MAX_URL_LENGTH = 2048
HTTP_HINT = "https is required; set ENTITY_SYNC_WEBHOOK_ALLOW_HTTP=true for local development"
PRIVATE_HINT = "set ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE=true for local development"

# The well-known NAT64 prefix (RFC 6052): on an IPv6-only network with DNS64,
# every IPv4 destination appears as 64:ff9b::a.b.c.d, so judge the embedded one.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# A label that a URL parser or inet_aton would read as a number: "127.1",
# "0x7f000001", "2130706433" and "0177.0.0.1" all reach 127.0.0.1.
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.ASCII)
_HOST_CHARS = re.compile(r"[a-z0-9.-]+", re.ASCII)


class InvalidWebhookUrl(ValueError):
    """A webhook URL that entity-sync refuses to send to; the message says why."""


def system_resolve(host: str) -> list[str]:
    """Resolve ``host`` with the system resolver; unique addresses, in its order."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def address_problem(address: str) -> str | None:
    """Say why ``address`` is not a public unicast destination, or None when it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv6 address that carries an IPv4 one is only as good as that one:
        # ::ffff:127.0.0.1 is loopback whatever the IPv6 tables say.
        if ip.ipv4_mapped is not None:
            return address_problem(str(ip.ipv4_mapped))
        if ip in _NAT64:
            return address_problem(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        if ip.sixtofour is not None:
            inner = address_problem(str(ip.sixtofour))
            if inner is not None:
                return f"{inner} (inside a 6to4 address)"
        if ip.is_site_local:
            return "site-local"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        # Shared address space (100.64.0.0/10, carrier-grade NAT) and the like.
        ("not publicly routable", not ip.is_global),
    )
    for name, hit in checks:
        if hit:
            return name
    return None


def allowed_addresses(
    host: str, *, allow_private: bool, resolve: Resolver = system_resolve
) -> list[str]:
    """Resolve ``host`` and return the addresses it is safe to connect to.

    Refuses (InvalidWebhookUrl) when *any* address is not public: a name that
    mixes public and private answers is a rebinding trick or a misconfiguration,
    and either way the connector must not pick the private one. Resolution
    failures propagate as OSError (a network problem, not a bad URL).
    """
    literal = _ip_literal(host)
    if not allow_private and _is_localhost(host):
        raise InvalidWebhookUrl(f"{host} is loopback; {PRIVATE_HINT}")
    addresses = [literal] if literal is not None else resolve(host)
    if not addresses:
        raise OSError(f"{host} resolved to no addresses")
    if allow_private:
        return addresses
    for address in addresses:
        problem = address_problem(address)
        if problem is not None:
            shown = host if literal is not None else f"{host} resolves to {address}, which"
            raise InvalidWebhookUrl(f"{shown} is {problem}; {PRIVATE_HINT}")
    return addresses


def check_destination(url: str, *, allow_http: bool, allow_private: bool) -> str:
    """Re-check ``url`` before a send, without DNS; return its host.

    Settings may have changed since the URL was registered (http no longer
    allowed), so the static rules run again. Names are not resolved here: the
    webhook connector resolves and checks them in ``allowed_addresses`` at the
    moment it connects, which is the only check a rebinding name cannot dodge.
    """
    host = _checked_host(url, allow_http=allow_http)
    if allow_private:
        return host
    if _is_localhost(host):
        raise InvalidWebhookUrl(f"{host} is loopback; {PRIVATE_HINT}")
    literal = _ip_literal(host)
    if literal is not None:
        problem = address_problem(literal)
        if problem is not None:
            raise InvalidWebhookUrl(f"{host} is {problem}; {PRIVATE_HINT}")
    return host


def validate_webhook_url(
    url: str,
    *,
    allow_http: bool,
    allow_private: bool,
    resolve: Resolver = system_resolve,
) -> str:
    """Return ``url`` (trimmed) if it is a safe webhook destination right now.

    Raises InvalidWebhookUrl for: a scheme other than http(s); http unless
    ``allow_http``; user:password@ in the URL; a missing, non-ASCII, numeric or
    zone-scoped host; and, unless ``allow_private``, a host that is or resolves
    to a loopback, private, link-local, multicast, reserved or unspecified
    address (IPv4 and IPv6, IPv4-mapped included) or that does not resolve.
    """
    url = url.strip()
    host = check_destination(url, allow_http=allow_http, allow_private=allow_private)
    if not allow_private and _ip_literal(host) is None:
        try:
            allowed_addresses(host, allow_private=False, resolve=resolve)
        except (OSError, UnicodeError) as exc:
            raise InvalidWebhookUrl(f"{host} does not resolve ({exc})") from None
    return url


def _checked_host(url: str, *, allow_http: bool) -> str:
    """The static rules: scheme, userinfo, port, and a plain host; returns the host."""
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"a webhook URL may be at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise InvalidWebhookUrl("a webhook URL may not contain spaces or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise InvalidWebhookUrl("a webhook URL must start with https://")
    if scheme == "http" and not allow_http:
        raise InvalidWebhookUrl(HTTP_HINT)
    if "@" in parts.netloc:
        # Credentials in the URL end up in logs and proxies; the signature
        # already authenticates us to the receiver.
        raise InvalidWebhookUrl("a webhook URL may not contain user:password@")
    try:
        _ = parts.port  # parsing the port is the check
    except ValueError:
        raise InvalidWebhookUrl("the port of the webhook URL is not a number in 1-65535") from None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InvalidWebhookUrl("a webhook URL needs a host")
    if "%" in host:
        raise InvalidWebhookUrl("IPv6 zone identifiers are not allowed in a webhook URL")
    if _ip_literal(host) is not None:
        return host
    if not host.isascii():
        raise InvalidWebhookUrl(f"write the host {host!r} in its ASCII (xn--) form")
    if not _HOST_CHARS.fullmatch(host):
        raise InvalidWebhookUrl(f"{host!r} is not a valid host name")
    if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        raise InvalidWebhookUrl(
            f"{host!r} is a numeric host that is not a canonical IP address; "
            "write the address as a.b.c.d or use a name"
        )
    return host


def _ip_literal(host: str) -> str | None:
    """The canonical text of ``host`` if it is an IP address, else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def _is_localhost(host: str) -> bool:
    # RFC 6761: these names are loopback by definition, whatever DNS says.
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


# --- the connector: the connect-time check -------------------------------------


def guarded_transport(
    *,
    allow_private: bool,
    deadline_s: float,
    resolve: Resolver = system_resolve,
    max_connections: int = 20,
    ssl_context: SSLContext | None = None,
) -> httpx.BaseTransport:
    """An httpx transport that connects only to addresses ``allowed_addresses`` returns.

    Each request ends by ``deadline_s``, TLS handshake included
    (``worker.upstream.transport``). A refused address surfaces as an
    httpx.ConnectError whose cause/context chain holds the InvalidWebhookUrl.
    ``ssl_context`` defaults to httpx's (system CAs).
    """
    return DeadlineTransport(
        deadline_s=deadline_s,
        max_connections=max_connections,
        ssl_context=ssl_context,
        connect_to=partial(allowed_addresses, allow_private=allow_private, resolve=resolve),
    )
