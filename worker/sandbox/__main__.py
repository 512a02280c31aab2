"""``python -m worker.sandbox --host 127.0.0.1 --port 8900 [--config FILE] [--preset NAME]``."""

from __future__ import annotations

import argparse
import sys

from worker.sandbox import load_config, serve
from worker.sandbox.presets import PRESETS


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m worker.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", help="JSON config file (see worker/sandbox/README.md)")
    source.add_argument("--preset", choices=sorted(PRESETS), help="named config (default demo)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config or args.preset)
    except (OSError, ValueError) as exc:
        print(f"sandbox: cannot load config: {exc}", file=sys.stderr)
        return 2
    serve(args.host, args.port, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
