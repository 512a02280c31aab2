"""The sandbox's presets and config files: each preset validates, a bad one says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.sandbox import load_config
from harness.sandbox.config import read_config_file
from harness.sandbox.presets import PRESETS, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_valid_config(name: str) -> None:
    assert preset(name) == load_config(name)


def test_no_name_is_the_demo_preset() -> None:
    assert load_config(None) == preset("demo")


def test_an_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known: .*demo"):
        preset("no-such-preset")


def test_a_config_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.json"
    path.write_text(preset("demo").model_dump_json(), encoding="utf-8")
    assert read_config_file(path) == preset("demo")
    assert load_config(path) == preset("demo")


def test_a_config_with_an_unknown_shape_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"connections": "not a mapping"}), encoding="utf-8")
    with pytest.raises(ValidationError):
        read_config_file(path)
