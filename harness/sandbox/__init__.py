"""The sandbox: a simulated unified API (docs/upstream-api.md) with named fault scenarios.

Run it with ``python -m harness.sandbox --port 8900 --preset demo``; tests use
``harness.testing.sandbox.running_sandbox``. See ``README.md`` for the config
format, the scenarios and the control API.
"""

from __future__ import annotations

from pathlib import Path

from harness.sandbox.config import SandboxConfig, parse_config, read_config_file
from harness.sandbox.presets import PRESETS, preset
from harness.sandbox.server import SandboxServer, serve, start_server


def load_config(path_or_preset: str | Path | None) -> SandboxConfig:
    """A preset by name, else a JSON config file by path; None means the ``demo`` preset."""
    if path_or_preset is None:
        return preset("demo")
    if isinstance(path_or_preset, str) and path_or_preset in PRESETS:
        return preset(path_or_preset)
    return read_config_file(path_or_preset)


__all__ = [
    "PRESETS",
    "SandboxConfig",
    "SandboxServer",
    "load_config",
    "parse_config",
    "serve",
    "start_server",
]
