"""The harness's commands: ``sandbox`` (serve the simulated unified API) and ``demo``.

``python -m harness sandbox|demo`` runs them; ``entity-sync sandbox`` and
``entity-sync demo`` parse the same options (``add_sandbox_arguments``, declared
once beside the product's CLI) and hand the parsed arguments to
``cmd_sandbox`` and ``cmd_demo`` here, importing this module only when they
run (the worker never imports the harness).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from worker.errors import ConfigError, EntitySyncError
from worker.operator_input import InvalidInput, decode_secret_bytes
from worker.ops.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_sandbox_arguments,
    read_webhook_url,
)
from worker.settings import Settings, get_settings


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the sandbox until interrupted."""
    from harness.sandbox import load_config, serve
    from harness.sandbox.webhooks import WebhookTarget

    target = None
    url = read_webhook_url(args)
    if url:
        if not args.webhook_secret_file:
            raise UsageError("a webhook URL needs --webhook-secret-file")
        secret = decode_secret_bytes(
            Path(args.webhook_secret_file).read_bytes(), what="webhook secret"
        )
        target = WebhookTarget(url=url, secret=secret)
    serve(args.host, args.port, load_config(args.config or args.preset), webhooks=target)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Sandbox + worker + real syncs + status table (``harness.demo``)."""
    from harness.demo import run_demo

    return run_demo(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sandbox = commands.add_parser("sandbox", help="serve the simulated unified API")
    add_sandbox_arguments(sandbox)
    sandbox.set_defaults(handler=cmd_sandbox)
    demo = commands.add_parser("demo", help="sandbox + worker + real syncs + status table")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (the same codes as ``entity-sync``)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args, get_settings()))
    except (ConfigError, UsageError, InvalidInput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except EntitySyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
