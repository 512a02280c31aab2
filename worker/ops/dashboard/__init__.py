"""The read-only health dashboard: a grid page, the same data as JSON, Prometheus metrics.

``data`` builds the grid from the store and the breakers, ``stats`` adds up the
store's history, ``metrics`` writes the Prometheus text format, ``page`` is
the self-contained HTML, and ``server`` serves them (GET and HEAD only).
"""

from __future__ import annotations

from worker.ops.dashboard.data import Cell, ConnectionRow, Grid, build_grid
from worker.ops.dashboard.server import DashboardServer, is_loopback, serve

__all__ = [
    "Cell",
    "ConnectionRow",
    "DashboardServer",
    "Grid",
    "build_grid",
    "is_loopback",
    "serve",
]
