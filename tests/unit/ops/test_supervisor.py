"""The worker supervisor (`entity-sync workers`), with stand-in children instead of Celery.

The supervisor runs in a subprocess of its own (signal handlers belong to a
main thread); each stand-in child writes what happens to it to a shared file.
tests/integration/ops/test_workers.py runs it with real Celery workers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from harness.testing.processes import ROOT

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    node, journal, ignore_term = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    def note(what):
        with open(journal, "a") as f:
            f.write(f"{node} {os.getpid()} {what}\\n")
    def on_term(signum, frame):
        note("TERM")
        if not ignore_term:
            sys.exit(0)
    def on_quit(signum, frame):
        note("QUIT")
        sys.exit(3)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGQUIT, on_quit)
    note("start")
    while True:
        time.sleep(0.05)
    """
)

SUPERVISOR = textwrap.dedent(
    """
    import sys
    from worker.ops.supervisor import Supervisor
    child, journal, processes, ignore_term = sys.argv[1:5]
    supervisor = Supervisor(
        processes=int(processes),
        command=lambda node: [sys.executable, child, node, journal, ignore_term],
    )
    sys.exit(supervisor.run())
    """
)


def journal_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def wait(condition, what: str, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start(tmp_path: Path, processes: int, *, ignore_term: bool = False):  # type: ignore[no-untyped-def]
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    journal = tmp_path / "journal"
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(child), str(journal), str(processes),
         "1" if ignore_term else "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )  # fmt: skip
    return proc, journal


def end(proc: subprocess.Popen[bytes], journal: Path) -> None:
    """Kill the supervisor and every child it started (each has its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    for pids in started(journal).values():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def started(journal: Path) -> dict[str, list[int]]:
    """Node name -> the pids it was started as, in order."""
    nodes: dict[str, list[int]] = {}
    for node, pid, what in journal_lines(journal):
        if what == "start":
            nodes.setdefault(node, []).append(int(pid))
    return nodes


def test_starts_one_child_per_process_with_distinct_node_names(tmp_path: Path) -> None:
    proc, journal = start(tmp_path, 3)
    try:
        nodes = wait(lambda: len(started(journal)) == 3 and started(journal), "3 children")
        assert sorted(nodes) == ["w1@%h", "w2@%h", "w3@%h"]  # Celery expands %h
    finally:
        end(proc, journal)


def test_a_child_that_dies_is_started_again_under_its_name(tmp_path: Path) -> None:
    proc, journal = start(tmp_path, 2)
    try:
        nodes = wait(lambda: len(started(journal)) == 2 and started(journal), "2 children")
        os.kill(nodes["w2@%h"][0], signal.SIGKILL)
        again = wait(lambda: len(started(journal).get("w2@%h", [])) == 2 and started(journal),
                     "w2 restarted")  # fmt: skip
        assert again["w2@%h"][1] != nodes["w2@%h"][0]
        assert again["w1@%h"] == nodes["w1@%h"]  # the others are left alone
        assert proc.poll() is None
    finally:
        end(proc, journal)


def test_sigterm_is_forwarded_to_every_child_and_the_supervisor_exits_when_they_have(
    tmp_path: Path,
) -> None:
    proc, journal = start(tmp_path, 2)
    try:
        nodes = wait(lambda: len(started(journal)) == 2 and started(journal), "2 children")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        terms = {node for node, _, what in journal_lines(journal) if what == "TERM"}
        assert terms == {"w1@%h", "w2@%h"}
        for pids in nodes.values():  # every child has ended, none was restarted
            assert len(pids) == 1
            assert not Path(f"/proc/{pids[0]}").exists()
    finally:
        end(proc, journal)


def test_children_end_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves no time to forward anything: the kernel sends the children SIGTERM."""
    proc, journal = start(tmp_path, 2)
    try:
        nodes = wait(lambda: len(started(journal)) == 2 and started(journal), "2 children")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait(lambda: sum(w == "TERM" for _, _, w in journal_lines(journal)) == 2, "children TERM")
        for node, pids in nodes.items():
            wait(lambda pid=pids[0]: not Path(f"/proc/{pid}").exists(), f"{node} gone")
    finally:
        end(proc, journal)


def test_a_second_signal_asks_for_a_cold_shutdown(tmp_path: Path) -> None:
    """Children still busy with a warm shutdown get SIGQUIT (Celery: cold shutdown)."""
    proc, journal = start(tmp_path, 2, ignore_term=True)
    try:
        wait(lambda: len(started(journal)) == 2, "2 children")
        proc.send_signal(signal.SIGINT)
        wait(lambda: sum(w == "TERM" for _, _, w in journal_lines(journal)) == 2, "warm asked")
        time.sleep(0.5)
        assert proc.poll() is None  # waits for the warm shutdown, however long
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 1  # the children ended with 3
        quits = {node for node, _, what in journal_lines(journal) if what == "QUIT"}
        assert quits == {"w1@%h", "w2@%h"}
    finally:
        end(proc, journal)
