"""A Celery worker with a measuring hook.

``python -m bench.instrumented_worker MODE OUT -- CELERY ARGS``

MODE ``profile``: run the worker under pyinstrument (use ``--pool=solo`` so
tasks run on the profiled main thread) and write the session to OUT (JSON)
when the worker shuts down.

MODE ``redis``: count Redis round trips (one ``send_packed_command`` is one
write, answered by one read; a pipeline is one) and the commands in them, per
Redis database, and dump the counts to OUT (JSON) twice a second.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any


def _count_redis(out: Path) -> None:
    import redis.connection

    trips: Counter[str] = Counter()
    commands: Counter[str] = Counter()
    names: Counter[str] = Counter()
    lock = threading.Lock()
    original = redis.connection.AbstractConnection.send_packed_command
    send_one = redis.connection.AbstractConnection.send_command
    pack_many = redis.connection.AbstractConnection.pack_commands

    def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
        with lock:
            trips[str(self.db)] += 1
        return original(self, command, check_health)

    def send_command(self: Any, *args: Any, **kwargs: Any) -> None:
        with lock:
            commands[str(self.db)] += 1
            names[f"{self.db} {str(args[0]).upper()}"] += 1
        return send_one(self, *args, **kwargs)

    def pack_commands(self: Any, batch: Any) -> Any:
        batch = list(batch)  # a pipeline: several commands in one write
        with lock:
            commands[str(self.db)] += len(batch)
            for command in batch:
                names[f"{self.db} {str(command[0]).upper()}"] += 1
        return pack_many(self, batch)

    redis.connection.AbstractConnection.send_packed_command = send_packed_command
    redis.connection.AbstractConnection.send_command = send_command
    redis.connection.AbstractConnection.pack_commands = pack_commands

    def dump() -> None:
        while True:
            with lock:
                data = {"trips": dict(trips), "commands": dict(commands), "names": dict(names)}
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(out)
            threading.Event().wait(0.5)

    threading.Thread(target=dump, daemon=True).start()


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    args = sys.argv[sys.argv.index("--") + 1 :]
    from celery.__main__ import main as celery_main

    sys.argv = ["celery", *args]
    if mode == "redis":
        _count_redis(out)
        celery_main()
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    try:
        celery_main()
    except SystemExit:
        pass
    finally:
        profiler.stop()
        out.write_text(profiler.output(renderer=_renderer()))
        out.with_suffix(".txt").write_text(profiler.output_text(unicode=False, color=False))


def _renderer() -> Any:
    from pyinstrument.renderers import JSONRenderer

    return JSONRenderer()


if __name__ == "__main__":
    main()
