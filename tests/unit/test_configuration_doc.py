"""docs/configuration.md names every setting and says what the code says now."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from worker.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "configuration.md"
SCRIPT = ROOT / "scripts" / "settings_doc.py"


def test_every_setting_has_a_row_and_nothing_else_does() -> None:
    rows = set(re.findall(rf"^\| `({ENV_PREFIX}[A-Z0-9_]+)` \|", PAGE.read_text(), re.M))
    expected = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    assert expected - rows == set(), "missing from docs/configuration.md"
    assert rows - expected == set(), "documented but not a setting"


def test_the_page_is_what_the_generator_writes_now() -> None:
    """Stale or unexplained: `python scripts/settings_doc.py` says which and rewrites it."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_field_without_a_comment_stops_the_generator() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import settings_doc
    finally:
        sys.path.remove(str(SCRIPT.parent))
    source = (
        "class Settings:\n"
        "    # Things.\n"
        "    explained: int = 1  # what it means\n"
        "    bare: int = 2\n"
        "\n"
        "    # Another group.\n"
        "    #\n"
        "    # The first field's own meaning.\n"
        "    first: int = 3\n"
    )
    found, unexplained = settings_doc.sections(source)
    assert unexplained == ["bare"]
    assert [s.title for s in found] == ["Things", "Another group"]
    assert found[1].rows[0].meaning == "The first field's own meaning."
