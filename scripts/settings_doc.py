"""Write docs/configuration.md from ``worker.settings.Settings``: every setting, always.

The settings class is the one source. Each field's variable name, default and
bounds come from pydantic; its meaning from the comments beside it in the
class body, by these rules:

- fields separated by a blank line form a section; the comment block above a
  section's first field introduces the section (its first phrase is the
  title). A line holding only ``#`` ends the introduction: what follows it
  describes the first field alone;
- a field's meaning is its end-of-line comment, else the comment block right
  above it (when that block is not the section's introduction);
- a block above a field that also has an end-of-line comment is a note the
  section prints above its table.

A field with no meaning stops the script, naming it: every setting is
explained. ``python scripts/settings_doc.py`` rewrites the page; ``--check``
exits 1 when the page is stale (tests/unit/test_configuration_doc.py runs it).
"""

from __future__ import annotations

import argparse
import ast
import io
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "configuration.md"

HEADER = """\
# Configuration

Every setting is an environment variable, `ENTITY_SYNC_` followed by its name,
read once when a process starts. A wrong value stops the process at start-up
with a message naming the variable. "s" is seconds (fractions allowed where
the type is not whole); "allowed" is what the process accepts.

Generated from the settings class by `python scripts/settings_doc.py`; do not
edit by hand. A test fails when a setting is missing here or this page is
stale. To explain a new setting, write a comment beside its field.
"""

SECONDS_NAMES = (
    "_seconds",
    "_timeout",
    "_deadline",
    "_ttl",
    "_budget",
)


@dataclass
class Row:
    name: str
    meaning: str


@dataclass
class Section:
    intro: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)

    @property
    def title(self) -> str:
        text = " ".join(self.intro) or "Other settings"
        text = text.split(":")[0].split(" (")[0].split(". ")[0].rstrip(".")
        return text[:1].upper() + text[1:]

    @property
    def prose(self) -> str:
        text = " ".join(self.intro)
        head, colon, rest = text.partition(": ")
        if colon and head.split(" (")[0] == self.title:
            text = rest[:1].upper() + rest[1:]  # the title is the heading already
        # An introduction that is only its title says nothing more.
        return "" if text.rstrip(".") == self.title else text


class Unexplained(Exception):
    """Fields without a comment that says what they mean."""


def _comments(source: str) -> tuple[dict[int, str], dict[int, str]]:
    """Comments by line: (whole-line comments, end-of-line comments), text after ``#``."""
    whole: dict[int, str] = {}
    trailing: dict[int, str] = {}
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        row, col = token.start
        text = token.string[1:].strip()
        if lines[row - 1][:col].strip():
            trailing[row] = text
        else:
            whole[row] = text
    return whole, trailing


def _block_above(line: int, whole: dict[int, str]) -> list[str]:
    """The whole-line comments directly above ``line`` (1-based), top first."""
    block: list[str] = []
    row = line - 1
    while row in whole:
        block.insert(0, whole[row])
        row -= 1
    return block


def sections(source: str) -> tuple[list[Section], list[str]]:
    """The Settings class's sections in source order, and the fields left unexplained."""
    tree = ast.parse(source)
    [settings] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings"]
    whole, trailing = _comments(source)
    lines = source.splitlines()
    found: list[Section] = []
    unexplained: list[str] = []
    previous_end = 0
    for node in settings.body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        name = node.target.id
        if name == "model_config":
            previous_end = node.end_lineno or node.lineno
            continue
        above = _block_above(node.lineno, whole)
        start = node.lineno - len(above)
        starts_section = not found or any(
            not lines[row - 1].strip() for row in range(previous_end + 1, start)
        )
        own_above: list[str] = above
        if starts_section:
            section = Section()
            found.append(section)
            if "" in above:  # a bare `#` ends the introduction
                cut = len(above) - above[::-1].index("")
                section.intro, own_above = [t for t in above[:cut] if t], above[cut:]
            else:
                section.intro, own_above = above, []
        section = found[-1]
        eol = trailing.get(node.end_lineno or node.lineno) or trailing.get(node.lineno)
        if eol and own_above:
            section.notes.append(" ".join(own_above))
        meaning = eol or " ".join(own_above)
        if not meaning:
            unexplained.append(name)
        section.rows.append(Row(name, meaning))
        previous_end = node.end_lineno or node.lineno
    return found, unexplained


def _is_seconds(name: str, annotation: str) -> bool:
    return "PositiveSeconds" in annotation or name.endswith(SECONDS_NAMES)


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    return f"{value:g}"


def default_of(name: str, info: FieldInfo, annotation: str) -> str:
    value = info.default
    if value is PydanticUndefined or value is None:
        return "(none)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, int | float):
        shown = f"`{_number(value)}`"
        if _is_seconds(name, annotation):
            shown += " s"
        elif name.endswith("_days"):
            shown += " days"
        elif name.endswith("_bytes") and value % 1024 == 0:
            shown += f" ({_size(int(value))})"
        return shown
    return f"`{value}`"


def _size(value: int) -> str:
    for unit, factor in (("MiB", 1024**2), ("KiB", 1024)):
        if value % factor == 0:
            return f"{value // factor} {unit}"
    return f"{value} bytes"


def bounds_of(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        for attribute, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(item, attribute, None)
            if bound is not None:
                parts.append(f"{sign} {_number(bound)}")
    return ", ".join(parts) or "-"


def _annotations(source: str) -> dict[str, str]:
    tree = ast.parse(source)
    [settings] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings"]
    return {
        node.target.id: ast.get_source_segment(source, node.annotation) or ""
        for node in settings.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """The page, from the settings class and its source."""
    import worker.settings as module
    from worker.settings import Settings

    source = Path(module.__file__ or "").read_text(encoding="utf-8")
    prefix = Settings.model_config.get("env_prefix", "")
    found, unexplained = sections(source)
    if unexplained:
        raise Unexplained(
            "settings without a comment saying what they mean (write one beside the field): "
            + ", ".join(unexplained)
        )
    annotations = _annotations(source)
    fields = Settings.model_fields
    placed = {row.name for section in found for row in section.rows}
    if placed != set(fields):
        raise Unexplained(f"settings the generator could not place: {sorted(set(fields) ^ placed)}")
    out = [HEADER]
    for section in found:
        out.append(f"## {section.title}\n")
        for text in [section.prose, *section.notes]:
            if text:
                out.append(_cell(text) + "\n")
        out.append("| variable | default | allowed | meaning |")
        out.append("|---|---|---|---|")
        for row in section.rows:
            info = fields[row.name]
            default = default_of(row.name, info, annotations[row.name])
            out.append(
                f"| `{prefix}{row.name.upper()}` | {default} | {bounds_of(info)} | "
                f"{_cell(row.meaning)} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    try:
        text = render()
    except Unexplained as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    shown = TARGET.relative_to(ROOT)
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{shown} is stale: run python scripts/settings_doc.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
