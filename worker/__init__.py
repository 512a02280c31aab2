"""entity-sync: keeps a faithful copy of each connection's entities.

`worker` holds the Celery app and the resilience core; task bodies live in the
`tasks` package. Dependencies flow one way: `tasks` imports `worker`.

``celery -A worker worker`` finds the app through the lazy ``celery``
attribute below, so importing a small module such as ``worker.settings`` does
not build the Celery app.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "celery":
        from worker.celeryapp.app import app

        return app
    raise AttributeError(name)
