"""``python -m bench [--quick] [--only NAME ...] [--runs N] [--output FILE]``.

Runs the suites against a Redis of the bench's own (a ``redis-server`` on a
free port, unless ``BENCH_REDIS_URL`` names one) and the machine's
PostgreSQL, and writes BENCHMARKS.md. Two bench runs on one machine then
never flush each other's queues; a bench stopped with SIGTERM stops its
workers first. With ``--only`` and an existing output file, only the suites
run replace their sections and "Targets at a glance" lines (bench/merge.py);
the other suites' stay. Benchmarks report; the exit status is 0 even when a target is
missed (it is 1 only when a suite could not run at all).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SUITES = (
    "throughput",
    "latency",
    "blast_radius",
    "memory",
    "redis_cost",
    "scrape",
    "profile",
    "housekeeping",
    "scale_out",
)


def ensure_dependencies() -> None:
    """Install the ``bench`` extra when it is missing (`make install` has only dev and flower)."""
    missing = [
        m for m in ("psutil", "pyinstrument", "gevent") if importlib.util.find_spec(m) is None
    ]
    if missing:
        print(f"bench: installing the bench extra ({', '.join(missing)} missing)", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[bench]"], check=True
        )


def main(argv: list[str] | None = None) -> int:
    ensure_dependencies()
    # SIGTERM ends the bench through its `finally` blocks and stop_every_process: the
    # workers it started run in sessions of their own and would outlive it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.ExitStack() as stack:
        if not os.environ.get("BENCH_REDIS_URL") and shutil.which("redis-server"):
            from chaos.infra import RedisServer

            server = stack.enter_context(RedisServer())
            os.environ["BENCH_REDIS_URL"] = server.base_url
        from bench.common import stop_every_process

        stack.callback(stop_every_process)
        return _run_suites(argv)


def _run_suites(argv: list[str] | None) -> int:
    from bench.common import OUT_DIR, say
    from bench.report import Section, merge, write

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small smoke version (~3 min)")
    parser.add_argument("--only", action="append", choices=SUITES, help="run only these suites")
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement (3)")
    parser.add_argument("--output", type=Path, default=None, help="default: BENCHMARKS.md")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    quick_out = ROOT / "var" / "bench" / "BENCHMARKS.quick.md"
    output = args.output or (quick_out if args.quick else ROOT / "BENCHMARKS.md")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    sections: list[Section] = []
    summaries: dict[str, list[str]] = {}
    started = time.monotonic()
    failed = 0
    for name in args.only or SUITES:
        say(f"--- {name} ---")
        t0 = time.monotonic()
        module = importlib.import_module(f"bench.{name}")
        try:
            section, lines = module.run(quick=args.quick, runs=runs)
        except Exception:
            failed += 1
            trace = traceback.format_exc()
            say(f"{name} could not run:\n{trace}")
            section = Section(name, f"{name}: could not run", f"python -m bench --only {name}")
            section.text(f"```\n{trace[-2000:]}\n```")
            lines = [f"- {name}: could not run (see its section)."]
        section.seconds = time.monotonic() - t0
        sections.append(section)
        summaries[name] = lines
        say(f"{name} took {section.seconds:.0f} s")
    if args.only and output.exists():
        # A suite re-run alone: the other suites' sections and lines stay.
        merge(output, sections, summaries, order=SUITES, argv=argv)
    else:
        summary = [line for lines in summaries.values() for line in lines]
        write(output, sections, argv=argv, summary=summary, total_s=time.monotonic() - started)
    return 1 if failed == len(args.only or SUITES) else 0


if __name__ == "__main__":
    sys.exit(main())
