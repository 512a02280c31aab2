"""What every command shares: exit codes, usage errors, reading secrets and URLs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from worker.entities import ALL_ENTITY_TYPES
from worker.errors import EntitySyncError
from worker.operator_input import (
    InvalidInput,
    check_http_url,
    clean_secret,
    decode_secret_bytes,
)
from worker.settings import Settings
from worker.store import SqlStore, open_store

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_TIMEOUT, EXIT_DEFERRED = 0, 1, 2, 3, 4
ENTITY_CHOICES = [t.value for t in ALL_ENTITY_TYPES]


class UsageError(EntitySyncError):
    """The command line itself is wrong."""


def store_for(settings: Settings) -> SqlStore:
    return open_store(settings.store_url)


def read_secret(args: argparse.Namespace, what: str = "token") -> str:
    """A token or secret from ``--token-file`` or stdin, as UTF-8 (a BOM allowed), checked.

    Bytes, not the locale's text: a file saved by a Windows editor starts with
    a BOM and must read the same as any other. Messages never show the value.
    """
    if args.token_file:
        try:
            raw = Path(args.token_file).read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise UsageError(f"--token-file: cannot read {args.token_file}: {reason}") from None
    else:
        if sys.stdin.isatty():
            prompt = f"{what} (input hidden is not supported; paste and press Enter):"
            print(prompt, file=sys.stderr)
        raw = sys.stdin.buffer.readline()
    return clean_secret(decode_secret_bytes(raw, what=what), what=what)


def read_token(args: argparse.Namespace) -> str:
    return read_secret(args, "token")


def upstream_url_arg(url: str | None) -> str | None:
    """A per-connection API URL under the rule of ENTITY_SYNC_UPSTREAM_URL; warns on http."""
    if url is None:
        return None
    try:
        checked = check_http_url(url, what="--upstream-url")
    except InvalidInput as exc:
        raise UsageError(str(exc)) from None
    if checked.lower().startswith("http://"):
        print(
            "warning: --upstream-url is plain http: the token travels unencrypted "
            "(use https outside a trusted network)",
            file=sys.stderr,
        )
    return checked


Handler = Callable[[argparse.Namespace, Settings], int]
