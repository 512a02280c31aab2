"""``python -m chaos [--long] [--only NAME ...] [--output RELIABILITY.md]``: the fault suite.

Runs every fault case (each on its own Redis, PostgreSQL where it needs one,
sandbox and workers), prints progress on stderr and writes RELIABILITY.md.
Exit status 0 when every fault was survived with nothing lost, 1 otherwise
(the table says which), 2 when a case could not run at all.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from chaos import broker, hostile, kills, lies, load, poison, postgres, redis_faults, webhooks
from chaos.harness import CaseResult, log, timed
from chaos.notes import NOTES

ROOT = Path(__file__).resolve().parent.parent


def cases(long: bool) -> dict[str, Callable[[], CaseResult]]:
    return {
        "kills-sqlite": lambda: kills.run(kills=20),
        "kills-postgres": lambda: kills.run(kills=20, postgres=True),
        "redis-restart": lambda: redis_faults.restart(restarts=3),
        "redis-outage": lambda: redis_faults.outage(seconds=60 if long else 20),
        "postgres-restart": lambda: postgres.run(restarts=3),
        "broker": broker.run,
        "webhooks": lambda: webhooks.run(outage_s=600 if long else 20),
        "poison": lambda: poison.run(max_deliveries=5),
        "hostile-data": lambda: hostile.run(connections=30 if long else 10),
        "lying-upstream": lambda: lies.run(connections=24 if long else 8),
        "load": lambda: load.run(connections=1000 if long else 200),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--long", action="store_true", help="full-length outages and load")
    parser.add_argument("--only", action="append", default=[], help="run only these cases")
    parser.add_argument("--output", type=Path, default=ROOT / "RELIABILITY.md")
    args = parser.parse_args(argv)
    available = cases(args.long)
    chosen = args.only or list(available)
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(available)}")
    started = time.monotonic()
    results: list[CaseResult] = []
    crashed = False
    for name in chosen:
        log(f"case {name}: start")
        try:
            result = timed(available[name])
        except Exception as exc:  # noqa: BLE001 - a case that cannot run is reported, not hidden
            crashed = True
            result = CaseResult(fault=name, outcome=f"the case could not run: {exc!r}"[:500])
            result.notes.append(traceback.format_exc().splitlines()[-1][:300])
            result.seconds = float("nan")
        log(f"case {name}: {'survived' if result.survived else 'NOT survived'}: {result.outcome}")
        results.append(result)
    from chaos.report import render, write

    command = "make chaos" + (" ARGS=--long" if args.long else "")
    if args.only:
        command = "python -m chaos " + " ".join(f"--only {n}" for n in args.only)
    text = render(
        results,
        command=command,
        long=args.long,
        seconds=time.monotonic() - started,
        notes=NOTES,
    )
    write(args.output, text)
    log(f"wrote {args.output}")
    if crashed:
        return 2
    return 0 if all(r.survived and r.records_lost == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
