"""Re-running one suite: its section and summary lines replace theirs in BENCHMARKS.md.

Pure text, so it is tested without services (tests/unit/test_bench_merge.py).
A section is found by its ``Command: `python -m bench --only NAME` `` line
(a suite that could not run has one too); a summary line of "Targets at a
glance" by the text before its first ": ", which stays the same from run to
run (``- Memory``, ``- Throughput vs the limit (target >= 0.8)``), or by
``- NAME`` (the line of a suite that could not run).
"""

from __future__ import annotations

GLANCE = "## Targets at a glance"
COMMAND = "python -m bench --only "


def suite_of(block: str) -> str | None:
    """The suite a section came from, by its command line."""
    for line in block.splitlines()[:4]:
        if line.startswith("Command:") and COMMAND in line:
            return line.split(COMMAND, 1)[1].split()[0].rstrip("`")
    return None


def summary_key(line: str) -> str:
    return line.split(": ", 1)[0]


def merge_text(
    text: str,
    blocks: dict[str, str],
    summaries: dict[str, list[str]],
    *,
    order: tuple[str, ...],
) -> str:
    """``text`` with each suite's section replaced by ``blocks[suite]`` and its summary
    lines by ``summaries[suite]``; a suite new to the file goes in its place in ``order``."""
    head, *rest = text.split("\n## ")
    sections = ["## " + b.strip("\n") for b in rest]
    glance_at = next((i for i, b in enumerate(sections) if b.startswith(GLANCE)), None)
    glance = []
    if glance_at is not None:
        glance = [line for line in sections[glance_at].splitlines()[1:] if line.strip()]
    fresh = {name: block.strip("\n") for name, block in blocks.items()}
    merged: list[str] = []
    for i, block in enumerate(sections):
        if i == glance_at:
            continue
        suite = suite_of(block)
        merged.append(fresh.pop(suite) if suite in fresh else block)
    for suite, block in fresh.items():
        rank = order.index(suite) if suite in order else len(order)
        later = [
            i for i, b in enumerate(merged) if (s := suite_of(b)) in order and order.index(s) > rank
        ]
        merged.insert(later[0] if later else len(merged), block)
    for suite, lines in summaries.items():
        keys = {summary_key(line) for line in lines} | {f"- {suite}"}
        where = [i for i, line in enumerate(glance) if summary_key(line) in keys]
        at = where[0] if where else len(glance)
        glance = [line for i, line in enumerate(glance) if i not in where]
        glance[at:at] = lines
    out = [head.rstrip("\n")]
    if glance:
        out.append("\n".join([GLANCE, "", *glance]))
    out += merged
    return "\n\n".join(out).rstrip() + "\n"
