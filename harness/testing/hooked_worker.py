"""The ordinary Celery worker, started after a test-only module installed its hooks.

``tests/fault_worker.py`` (raise at a step) and ``chaos/worker.py`` (SIGKILL
at an armed point) both wrap product functions and then run
``celery <argv>``; this is that second half, shared.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_celery(install: Callable[[], None]) -> None:
    """``install()`` the hooks in this process, then run ``celery`` with our argv."""
    install()
    from celery.__main__ import main as celery_main

    sys.argv = ["celery", *sys.argv[1:]]
    celery_main()
