"""The harness's entry point, and the two `entity-sync` commands that forward to it."""

from __future__ import annotations

import argparse
import sys

import pytest

from harness import cli as harness_cli
from worker.ops import cli as worker_cli


def _options(parser: argparse.ArgumentParser, command: str) -> dict[str, tuple[object, ...]]:
    """Each option of one sub-command: its flags, default and choices."""
    sub = next(
        action.choices[command]
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    return {
        action.dest: (tuple(action.option_strings), action.default, action.choices)
        for action in sub._actions
        if action.dest != "help"
    }


def test_entity_sync_sandbox_has_the_options_of_the_harness_sandbox() -> None:
    assert _options(worker_cli.build_parser(), "sandbox") == _options(
        harness_cli.build_parser(), "sandbox"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["sandbox"],
        ["sandbox", "--port", "0", "--preset", "faults", "--webhook-url-file", "f"],
        ["sandbox", "--host", "0.0.0.0", "--config", "c.json", "--webhook-secret-file", "s"],
        ["demo"],
    ],
)
def test_both_entry_points_parse_a_command_line_alike(argv: list[str]) -> None:
    through_worker = vars(worker_cli.build_parser().parse_args(argv))
    through_harness = vars(harness_cli.build_parser().parse_args(argv))
    assert through_worker.pop("handler").__module__ == "worker.ops.cli.tools"
    assert through_harness.pop("handler").__module__ == "harness.cli"
    assert through_worker == through_harness


def test_the_forwarders_run_the_harness_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    monkeypatch.setattr(harness_cli, "cmd_demo", lambda args, settings: ran.append("demo") or 0)
    monkeypatch.setattr(harness_cli, "cmd_sandbox", lambda args, settings: ran.append("sb") or 0)
    assert worker_cli.main(["demo"]) == 0
    assert worker_cli.main(["sandbox", "--port", "0"]) == 0
    assert ran == ["demo", "sb"]


def test_without_the_harness_the_commands_say_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "harness.cli", None)  # as if not installed
    assert worker_cli.main(["demo"]) == 1
    error = capsys.readouterr().err
    assert "`entity-sync demo` runs the test and demo harness, which is not installed" in error
    assert "make install" in error


def test_a_webhook_url_without_its_secret_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert harness_cli.main(["sandbox", "--webhook-url", "http://127.0.0.1:1/hook"]) == 2
    assert "a webhook URL needs --webhook-secret-file" in capsys.readouterr().err
