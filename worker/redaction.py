"""The one redaction function: what may be written anywhere (logs, runs, Sentry).

``redact`` replaces with ``[Filtered]``: credentials in text (an
``Authorization`` value, ``Bearer``/``Basic`` credentials, ``token=``,
``secret:``, ``password=``, ``api_key=`` assignments), Fernet ciphertexts,
and every secret this process decrypted (``register_secret``), pieces of one
included. The run history, the log, the rule table's summaries and Sentry
all go through it.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

FILTERED = "[Filtered]"

_ASSIGNMENT = re.compile(
    r"(?i)(authorization[\"']?\s*[:=]\s*(?:(?:bearer|basic|token)\s+)?"
    r"|(?:token|secret|password|api[_-]?key)[\"']?\s*[:=]\s*)"
    r"[^\s,;&\"'\[]+"
)
_CREDENTIAL = re.compile(r"\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]+", re.IGNORECASE)
# A bearer credential written with characters the pattern above does not
# expect (a BOM, punctuation) is cut whole up to the next space.
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)(?!\[Filtered\])\S+")
_FERNET = re.compile(r"gAAAAA[A-Za-z0-9_\-]{20,}={0,2}")
_FRAGMENT = re.compile(r"[A-Za-z0-9._~+/\-]{12,}")  # long enough to be a piece of a secret
_TAIL = re.compile(r"[A-Za-z0-9._~+/\-]{6,}$")  # what a truncated secret leaves at the end

_MIN_SECRET_LENGTH = 8  # shorter values would redact ordinary words
_MAX_SECRETS = 10_000
_secrets: OrderedDict[str, None] = OrderedDict()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Redact ``value`` from everything this process writes from now on."""
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        _secrets[value] = None
        _secrets.move_to_end(value)
        while len(_secrets) > _MAX_SECRETS:
            _secrets.popitem(last=False)


def redact(text: str, *, limit: int | None = None) -> str:
    """``text`` without credentials or registered secrets, cut to ``limit`` characters."""
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{FILTERED}", text)
    text = _CREDENTIAL.sub(lambda m: f"{m.group(1)}{m.group(2)}{FILTERED}", text)
    text = _ASSIGNMENT.sub(lambda m: f"{m.group(1)}{FILTERED}", text)
    text = _FERNET.sub(FILTERED, text)
    with _secrets_lock:
        secrets = list(_secrets)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, FILTERED)
    if secrets:
        # A piece of a secret (cut short by the SDK, or sliced by someone's
        # debug line) is as bad as the whole.
        text = _FRAGMENT.sub(
            lambda m: FILTERED if any(m.group() in s for s in secrets) else m.group(), text
        )
        if text.endswith("..."):
            tail = _TAIL.search(text[:-3])
            if tail and any(s.startswith(tail.group()) for s in secrets):
                text = text[: tail.start()] + FILTERED + "..."
    return text if limit is None else text[:limit]
