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


def add_sandbox_arguments(sandbox: argparse.ArgumentParser) -> None:
    """The ``sandbox`` command's options, for ``entity-sync sandbox`` and ``python -m harness``."""
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8900)
    source = sandbox.add_mutually_exclusive_group()
    source.add_argument("--config", help="a sandbox config file (harness/sandbox/README.md)")
    source.add_argument("--preset", default="demo", help="a named preset (default: demo)")
    sandbox.add_argument("--webhook-url", help="where the sandbox sends the unified API's webhooks")
    add_webhook_url_sources(sandbox)
    sandbox.add_argument("--webhook-secret-file", help="the secret it signs them with")


def add_webhook_url_sources(parser: argparse.ArgumentParser) -> None:
    """``--webhook-url-stdin`` and ``--webhook-url-file``, next to a command's argv form.

    A webhook URL can carry a token in its path or query, and argv is what
    `ps` and shell history show; these read it where neither looks.
    """
    parser.add_argument(
        "--webhook-url-stdin",
        action="store_true",
        help="read the webhook URL from stdin (kept out of `ps` and shell history)",
    )
    parser.add_argument(
        "--webhook-url-file", metavar="PATH", help="read the webhook URL from this file"
    )


def read_webhook_url(args: argparse.Namespace, *, stdin_taken_by: str | None = None) -> str | None:
    """The webhook URL from argv (``args.webhook_url``), stdin or a file; None: not given.

    ``stdin_taken_by`` names the option that already reads stdin (a token or
    a secret): only one value can come that way. Messages never show the URL.
    """
    given = [
        name
        for name, present in (
            ("the URL argument", args.webhook_url is not None),
            ("--webhook-url-stdin", args.webhook_url_stdin),
            ("--webhook-url-file", args.webhook_url_file is not None),
        )
        if present
    ]
    if len(given) > 1:
        raise UsageError(f"give the webhook URL one way only (got {' and '.join(given)})")
    if args.webhook_url_stdin:
        if stdin_taken_by:
            raise UsageError(
                f"--webhook-url-stdin and {stdin_taken_by} both read stdin: "
                "put the URL in a file (--webhook-url-file)"
            )
        raw = sys.stdin.buffer.readline()
        where = "stdin"
    elif args.webhook_url_file is not None:
        try:
            raw = Path(args.webhook_url_file).read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise UsageError(
                f"--webhook-url-file: cannot read {args.webhook_url_file}: {reason}"
            ) from None
        where = args.webhook_url_file
    else:
        return args.webhook_url  # type: ignore[no-any-return]
    try:
        url = decode_secret_bytes(raw, what="webhook URL").strip()
    except InvalidInput as exc:
        raise UsageError(str(exc)) from None
    if not url:
        raise UsageError(f"no webhook URL in {where}")
    return url


def shown_url(url: str) -> str:
    """A webhook URL as printed: its query (where tokens often are) left out."""
    head, sep, _query = url.partition("?")
    return f"{head}?..." if sep else head


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
