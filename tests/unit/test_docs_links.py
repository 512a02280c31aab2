"""Every link and file path in README.md and docs/ points at something that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# A path into the repository, as prose or code mentions it: `worker/sync/pager.py`.
PATH = re.compile(
    r"(?<![\w./-])((?:worker|tasks|tests|scripts|bench|chaos|harness|docs)/[\w./-]*\w)"
)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        known = resolved.suffix != ".md" or not anchor or anchor in anchors(resolved)
        if not resolved.exists() or not known:
            broken.append(target)
    assert broken == [], f"{page.name}: links to nothing"


def exists(mention: str) -> bool:
    """A file or folder, or a name in a module written with its path (`tasks/sync._queue_of`)."""
    folder, _, name = mention.rpartition("/")
    module = f"{folder}/{name.split('.')[0]}.py"
    return (ROOT / mention).exists() or (ROOT / module).exists()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_paths_mentioned_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    missing = sorted({p for p in PATH.findall(text) if not exists(p)})
    assert missing == [], f"{page.name} mentions files the repository does not hold"
