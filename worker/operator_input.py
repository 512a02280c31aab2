"""Checks on what an operator types, before anything is saved.

Every check raises ``InvalidInput`` with a message naming the option, and
never repeats a secret. The same bounds serve the code that reads stored
values back (``usable_limits``, ``usable_interval``): a row written by an
older version, or by hand, must cost its own connection its override and
nothing more.
"""

from __future__ import annotations

import contextlib
import math
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit

from worker.errors import EntitySyncError

# The same ranges as the defaults' settings (worker/settings.py).
MAX_RATE_PER_SECOND = 10_000.0
MAX_BURST = 10_000
MAX_CONCURRENCY = 1000
MIN_INTERVAL_S = 1
MAX_INTERVAL_S = 7 * 86_400
MAX_SECRET_CHARS = 8192
# A webhook signing secret shorter than this is guessable offline from one
# signed delivery; `entity-sync keygen --webhook` makes 32 random bytes.
MIN_WEBHOOK_SECRET_BYTES = 16
BOM = "\ufeff"


class InvalidInput(EntitySyncError):
    """An operator's value that must not be saved; the message names the option."""


@dataclass(frozen=True)
class LimitValues:
    """A connection's overrides; None means the default applies."""

    rate_per_second: float | None
    rate_burst: int | None
    max_concurrency: int | None


def check_limits(
    rate_per_second: float | None, rate_burst: int | None, max_concurrency: int | None
) -> LimitValues:
    """The overrides if each is in range, else InvalidInput naming the option."""
    if rate_per_second is not None and not (
        math.isfinite(rate_per_second) and 0 < rate_per_second <= MAX_RATE_PER_SECOND
    ):
        raise InvalidInput(
            f"--rate must be a number of requests per second above 0 and at most "
            f"{MAX_RATE_PER_SECOND:g} (got {rate_per_second!r})"
        )
    if rate_burst is not None and not 1 <= rate_burst <= MAX_BURST:
        raise InvalidInput(f"--burst must be 1..{MAX_BURST} (got {rate_burst})")
    if max_concurrency is not None and not 1 <= max_concurrency <= MAX_CONCURRENCY:
        raise InvalidInput(
            f"--max-concurrency must be 1..{MAX_CONCURRENCY} (got {max_concurrency})"
        )
    return LimitValues(rate_per_second, rate_burst, max_concurrency)


def usable_limits(
    rate_per_second: object, rate_burst: object, max_concurrency: object
) -> tuple[LimitValues, list[str]]:
    """Stored overrides with each bad one replaced by None (the default), and why."""
    problems: list[str] = []

    def usable(name: str, raw: object, kind: type[float] | type[int], top: float) -> object:
        value = _number(raw, kind)
        if raw is None:
            return None
        low = 0.0 if kind is float else 1.0
        if value is None or not (math.isfinite(value) and low <= value <= top) or value == 0:
            problems.append(f"{name} {raw!r}")
            return None
        return value

    rate = usable("rate_per_second", rate_per_second, float, MAX_RATE_PER_SECOND)
    burst = usable("rate_burst", rate_burst, int, MAX_BURST)
    cap = usable("max_concurrency", max_concurrency, int, MAX_CONCURRENCY)
    return (
        LimitValues(
            float(rate) if isinstance(rate, float | int) else None,
            int(burst) if isinstance(burst, int) else None,
            int(cap) if isinstance(cap, int) else None,
        ),
        problems,
    )


def check_interval(seconds: int | None) -> int | None:
    """The schedule interval if it is in range (None: the default), else InvalidInput."""
    if seconds is not None and not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise InvalidInput(
            f"SECONDS must be {MIN_INTERVAL_S}..{MAX_INTERVAL_S} (a week), or omitted for "
            f"the default (got {seconds})"
        )
    return seconds


def usable_interval(seconds: object) -> int | None:
    """A stored interval, or None (the default) when it is out of range or not a number."""
    value = _number(seconds, int)
    if value is None or not MIN_INTERVAL_S <= value <= MAX_INTERVAL_S:
        return None
    return int(value)


MIN_RECONCILE_S = 1
MAX_RECONCILE_S = 366 * 86_400


def check_reconcile_interval(seconds: int | None) -> int | None:
    """The reconciliation interval if it is in range (None: the default), else InvalidInput."""
    if seconds is not None and not MIN_RECONCILE_S <= seconds <= MAX_RECONCILE_S:
        raise InvalidInput(
            f"--every must be {MIN_RECONCILE_S}..{MAX_RECONCILE_S} seconds (a year), "
            f"or --default (got {seconds})"
        )
    return seconds


def usable_reconcile_interval(seconds: object) -> int | None:
    """A stored reconciliation interval, or None (the default) when it is not usable."""
    value = _number(seconds, int)
    if value is None or not MIN_RECONCILE_S <= value <= MAX_RECONCILE_S:
        return None
    return int(value)


def check_http_url(value: str, *, what: str) -> str:
    """An http(s) URL with a host, without a trailing slash; InvalidInput otherwise.

    The rule of ENTITY_SYNC_UPSTREAM_URL (worker/settings.py uses this too).
    """
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise InvalidInput(f"{what}: not a URL") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidInput(f"{what}: must be an http:// or https:// URL with a host")
    if any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in value):
        raise InvalidInput(f"{what}: must not contain spaces or control characters")
    return value.rstrip("/")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def upstream_base(url: str) -> str:
    """Which unified API a base URL names, however it is spelled.

    Scheme and host in lower case (a host name in its IDNA form, without a
    trailing dot), the scheme's default port dropped, no user info, query or
    fragment, repeated and trailing slashes dropped from the path. The path
    stays: two prefixes on one host may be two APIs behind one proxy. The
    result carries no credential, so it may be stored, shown and logged.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    with contextlib.suppress(UnicodeError):  # not a name IDNA spells: kept as written
        host = host.encode("idna").decode("ascii")
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None  # check_http_url refuses such a URL before it is stored
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    path = "/".join(segment for segment in parts.path.split("/") if segment)
    return f"{scheme}://{netloc}" + (f"/{path}" if path else "")


def clean_secret(raw: str, *, what: str) -> str:
    """A token or secret as read from stdin or a file, checked; never echoed.

    A leading BOM (Windows editors) and surrounding whitespace (the line's end)
    are dropped. What remains must be visible ASCII: a token travels in an
    ``Authorization`` header, which httpx encodes as ASCII, and a zero-width
    space or a control character is never part of a real token but a copy
    and paste accident that would fail every request.
    """
    value = raw.removeprefix(BOM).strip(" \t\r\n")
    if not value:
        raise InvalidInput(f"no {what} given (pipe it on stdin or use a file)")
    if len(value) > MAX_SECRET_CHARS:
        raise InvalidInput(f"the {what} is longer than {MAX_SECRET_CHARS} characters")
    for position, ch in enumerate(value, start=1):
        if "\x21" <= ch <= "\x7e":
            continue
        if ch in " \t":
            kind = "whitespace"
        elif ch.isspace() or unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp", "Zs"}:
            kind = f"an invisible or control character (U+{ord(ch):04X})"
        else:
            kind = f"a non-ASCII character (U+{ord(ch):04X})"
        raise InvalidInput(
            f"the {what} holds {kind} at position {position}; only visible ASCII "
            "characters are accepted, as an HTTP header carries them (the value is not shown)"
        )
    return value


def check_webhook_secret(secret: str, *, what: str = "webhook secret") -> str:
    """``secret`` if it is long enough to sign webhooks with, else InvalidInput.

    Counted in UTF-8 bytes of the whole secret, the ``whsec_`` prefix included,
    as the upstream webhook secret is. The message never shows the value or
    its length.
    """
    if len(secret.encode("utf-8")) < MIN_WEBHOOK_SECRET_BYTES:
        raise InvalidInput(
            f"the {what} must be at least {MIN_WEBHOOK_SECRET_BYTES} bytes long "
            "(make one with `entity-sync keygen --webhook`)"
        )
    return secret


def decode_secret_bytes(raw: bytes, *, what: str) -> str:
    """Bytes of a token file or stdin as UTF-8 (a BOM allowed); InvalidInput otherwise."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(f"the {what} is not UTF-8 text (the value is not shown)") from None


def _number(value: object, kind: type[float] | type[int]) -> float | int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if kind is int:
        if not math.isfinite(number) or number != int(number):
            return None
        return int(number)
    return number
