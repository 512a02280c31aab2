"""RELIABILITY.md: the command, the machine, the table and the notes."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from chaos.harness import CaseResult, machine

LONG = "long (`--long`: full-length outages and load)"
DEFAULT = (
    "default (shortened outages and load, stated per row; "
    "`make chaos ARGS=--long` for the full ones)"
)
HEADER = (
    "| fault | scale | injected | outcome | survived | records checked | records lost "
    "| stale | duplicates | time |"
)


def render(
    results: Sequence[CaseResult], *, command: str, long: bool, seconds: float, notes: str
) -> str:
    lines = [
        "# Reliability under faults",
        "",
        f"Written by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
        f"in {seconds / 60:.1f} min.",
        f"Machine: {machine()}.",
        f"Mode: {LONG if long else DEFAULT}.",
        "",
        "Every case runs against its own `redis-server` (broker and coordination) and, for",
        "PostgreSQL, its own cluster; the store is compared with the sandbox's truth record",
        "by record. *Records lost*: in the upstream, missing from the store (for webhooks:",
        "events never delivered). *Stale*: stored, but older than or different from the",
        "upstream. *Duplicates*: duplicate rows or foreign keys in the store (for webhooks:",
        "an event id delivered twice).",
        "",
        HEADER,
        "|" + "---|" * 10,
    ]
    for r in results:
        lines.append(
            f"| {r.fault} | {r.scale} | {r.injected} | {r.outcome} | "
            f"{'yes' if r.survived else '**no**'} | {r.records_checked} | {r.records_lost} | "
            f"{r.stale} | {r.duplicates} | {_t(r.seconds)} |"
        )
    lines += ["", "## Details per case", ""]
    for r in results:
        for note in r.notes:
            lines.append(f"- **{r.fault}**: {note}")
    lines += ["", notes.strip(), ""]
    return "\n".join(lines)


def _t(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds:.0f} s"


def write(path: Path, text: str) -> None:
    path.write_text(without_local_paths(text), encoding="utf-8")


def without_local_paths(text: str) -> str:
    """The report without this machine's paths (tracebacks quote them)."""
    root = str(Path(__file__).resolve().parents[1])
    for local, shown in (
        (sys.prefix, "<venv>"),
        (root, "<project>"),
        (sys.base_prefix, "<python>"),
    ):
        text = text.replace(local, shown)
    return text
