"""BENCHMARKS.md: each suite's tables with the command that made them and the machine."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis

from bench.common import POSTGRES_URL, REDIS_BASE
from bench.merge import merge_text


@dataclass
class Table:
    """A markdown table: a header row and rows of cells."""

    header: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        self.rows.append(list(cells))

    def markdown(self) -> str:
        def cell(value: Any) -> str:
            if isinstance(value, float):
                if value != value:  # NaN
                    return "-"
                if abs(value) >= 100:
                    return f"{value:,.0f}"
                if abs(value) >= 10:
                    return f"{value:.1f}"
                return f"{value:.2f}"
            if isinstance(value, int):
                return f"{value:,}"
            return str(value)

        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Section:
    """One suite's results."""

    name: str
    title: str
    command: str
    blocks: list[str | Table] = field(default_factory=list)
    seconds: float = 0.0

    def text(self, line: str) -> None:
        self.blocks.append(line)

    def table(self, table: Table) -> Table:
        self.blocks.append(table)
        return table

    def markdown(self) -> str:
        parts = [f"## {self.title}", "", f"Command: `{self.command}` ({self.seconds:.0f} s)", ""]
        for block in self.blocks:
            parts.append(block.markdown() if isinstance(block, Table) else block)
            parts.append("")
        return "\n".join(parts)


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    memory = psutil.virtual_memory().total / 2**30
    try:
        redis_version = redis.Redis.from_url(REDIS_BASE, socket_connect_timeout=2).info("server")[
            "redis_version"
        ]
    except redis.RedisError:
        redis_version = "unreachable"
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            pg_version = str(row[0]) if row else "?"
    except psycopg.Error:
        pg_version = "unreachable"
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = "?"
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{memory:.1f} GiB",
        "python": platform.python_version(),
        "redis": redis_version,
        "postgresql": pg_version,
        "os": platform.platform(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or "?",
    }


def write(
    path: Path, sections: list[Section], *, argv: list[str], summary: list[str], total_s: float
) -> None:
    info = machine()
    command = "python -m bench" + ("" if not argv else " " + " ".join(argv))
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`{command}`) in {total_s / 60:.1f} min. Re-run it to "
        "reproduce every table; `python -m bench --only NAME` re-runs one suite and "
        "replaces only its section and summary line, "
        "`--quick` a small smoke version. Benchmarks report; they never fail the build.",
        "",
        f"Machine: {info['cores']} cores ({info['cpu']}), {info['memory']} memory, "
        f"Python {info['python']}, Redis {info['redis']}, PostgreSQL {info['postgresql']}, "
        f"{info['os']}; {info['date']}, commit {info['commit']}.",
        "",
        "Every number is the median of the runs stated; ratios are measured side by side "
        "in the same session (runs interleaved), because this machine is shared and noisy. "
        "The sandbox (a stdlib Python HTTP server) runs on the same 2 cores as the worker: "
        "it limits the limit and entity-sync alike, which is why throughput is reported "
        "as a ratio to plain httpx against the same sandbox at the same concurrency.",
        "",
    ]
    if summary:
        lines += ["## Targets at a glance", "", *summary, ""]
    for section in sections:
        lines.append(section.markdown())
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    print(f"bench: wrote {path}", file=sys.stderr)


def splice(section: Section, summary: list[str], *, prefix: str, path: Path | None = None) -> None:
    """Put one suite's section (and its summary line) into BENCHMARKS.md, keeping the rest.

    For a suite run alone (``python -m bench.NAME``): its old section and the
    summary lines starting with ``prefix`` are replaced; other suites' stay.
    """
    path = path or Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    info = machine()
    block = section.markdown().rstrip() + (
        f"\n\nMeasured on {info['cores']} cores ({info['cpu']}), Python {info['python']}, "
        f"PostgreSQL {info['postgresql']}; {info['date']}, commit {info['commit']}.\n"
    )
    heading = f"## {section.title}"
    parts = text.split("\n## ")
    # The section stays where it was (other sections may have been pasted after it).
    sections = ["## " + p.rstrip("\n") for p in parts[1:]]
    where = [i for i, p in enumerate(sections) if p.startswith(heading)]
    if where:
        sections[where[0]] = block.rstrip("\n")
        sections = [p for i, p in enumerate(sections) if i not in where[1:]]
    else:
        sections.append(block.rstrip("\n"))
    out = [parts[0].rstrip("\n"), *sections]
    text = "\n\n".join(out) + "\n"
    if "## Targets at a glance" in text:
        anchor = text.index("## Targets at a glance")
        end = text.index("\n\n## ", anchor + 1) if "\n\n## " in text[anchor + 1 :] else len(text)
        glance = text[anchor:end].rstrip("\n").splitlines()
        glance = [line for line in glance if not line.startswith(prefix)]
        text = text[:anchor] + "\n".join(glance) + "\n" + "\n".join(summary) + text[end:]
    path.write_text(text, encoding="utf-8")
    print(f"bench: wrote {section.title!r} into {path}", file=sys.stderr)


def merge(
    path: Path,
    sections: list[Section],
    summaries: dict[str, list[str]],
    *,
    order: tuple[str, ...],
    argv: list[str],
) -> None:
    """Put re-run suites' sections and summary lines into an existing BENCHMARKS.md
    (``python -m bench --only NAME``), keeping every other suite's (bench/merge.py)."""
    info = machine()
    command = "python -m bench" + ("" if not argv else " " + " ".join(argv))
    blocks = {
        section.name: section.markdown().rstrip()
        + f"\n\nRe-run alone (`{command}`) on {info['date']}, commit {info['commit']}; "
        "the other sections are from the run described at the top."
        for section in sections
    }
    text = merge_text(path.read_text(encoding="utf-8"), blocks, summaries, order=order)
    path.write_text(text, encoding="utf-8")
    print(f"bench: wrote {', '.join(blocks)} into {path}", file=sys.stderr)
