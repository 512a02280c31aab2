"""`entity-sync workers`: one Celery worker process per core, supervised."""

from __future__ import annotations

import argparse
import os

from worker import logs
from worker.ops.cli.common import UsageError
from worker.ops.supervisor import Supervisor, celery_worker_argv, default_processes
from worker.settings import Settings


def cmd_workers(args: argparse.Namespace, settings: Settings) -> int:
    processes = args.processes or default_processes()
    if not 1 <= processes <= 256:
        raise UsageError(f"--processes must be 1..256, not {processes}")
    if not args.name_prefix.isidentifier():
        raise UsageError("--name-prefix must be letters, digits and underscores")
    logs.configure(settings.log_level)
    extra = [a for a in args.celery_args if a != "--"]
    supervisor = Supervisor(
        processes=processes,
        command=lambda node: celery_worker_argv(node, extra),
        prefix=args.name_prefix,
        env=dict(os.environ),
    )
    return supervisor.run()


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_text = "run one worker process per core (threads pool each), restarted when one dies"
    sub = commands.add_parser("workers", help=help_text, description=help_text)
    sub.set_defaults(handler=cmd_workers)
    sub.add_argument(
        "--processes",
        "-p",
        type=int,
        help="worker processes (default: one per core this process may use)",
    )
    sub.add_argument(
        "--name-prefix",
        default="w",
        help="node names are PREFIX<i>@<host> (default w: w1@host, w2@host, ...)",
    )
    sub.add_argument(
        "celery_args",
        nargs=argparse.REMAINDER,
        help="after --: more `celery worker` options for every process "
        "(e.g. -- --concurrency=32 -Q backfill); they win over the defaults",
    )
