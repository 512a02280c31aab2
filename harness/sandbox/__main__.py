"""``python -m harness.sandbox --host 127.0.0.1 --port 8900 [--config FILE] [--preset NAME]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.sandbox import load_config, serve
from harness.sandbox.presets import PRESETS
from harness.sandbox.webhooks import WebhookTarget


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m harness.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", help="JSON config file (see harness/sandbox/README.md)")
    source.add_argument("--preset", choices=sorted(PRESETS), help="named config (default demo)")
    parser.add_argument("--webhook-url", help="where to send the unified API's webhooks")
    parser.add_argument("--webhook-secret-file", help="the secret to sign them with")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config or args.preset)
        target = None
        if args.webhook_url:
            if not args.webhook_secret_file:
                raise ValueError("--webhook-url needs --webhook-secret-file")
            secret = Path(args.webhook_secret_file).read_text(encoding="utf-8-sig").strip()
            target = WebhookTarget(url=args.webhook_url, secret=secret)
    except (OSError, ValueError) as exc:
        print(f"sandbox: cannot load config: {exc}", file=sys.stderr)
        return 2
    serve(args.host, args.port, config, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
