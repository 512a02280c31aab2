"""A SQLite store's files are private to the worker's user, whatever the umask.

The store holds encrypted tokens next to every customer's records; a
world-readable ``store.db`` (or its WAL, which holds the latest pages in
clear) hands them to any local account. Each test creates a fresh store
under umask 000, the most permissive a process can run with.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, Env
from worker.store import Connection, open_store

pytestmark = pytest.mark.integration


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_store_its_wal_and_shm_are_0600_and_new_directories_0700(
    tmp_path: Path, permissive_umask: None
) -> None:
    os.chmod(tmp_path, 0o755)
    db = tmp_path / "var" / "deep" / "store.db"
    store = open_store(f"sqlite:///{db}")
    store.add_connection(Connection(id="c1", name="C1", entity_types=("assets",)))
    assert store.get_connection("c1").name == "C1"  # the store works as before
    files = {p.name: mode(p) for p in db.parent.iterdir()}
    assert {"store.db", "store.db-wal", "store.db-shm"} <= files.keys(), files
    assert files == dict.fromkeys(files, 0o600)
    assert mode(tmp_path / "var") == 0o700
    assert mode(db.parent) == 0o700
    assert mode(tmp_path) == 0o755, "a directory it did not create is left alone"


def test_the_cli_creates_a_private_store(tmp_path: Path, permissive_umask: None) -> None:
    """The path an operator takes first: `entity-sync connections add` on a new store."""
    db = tmp_path / "state" / "store.db"
    env = Env(store_url=f"sqlite:///{db}", upstream_url="http://127.0.0.1:9")
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "worker.ops.cli", "connections", "add", "c1", "--name", "C1",
         "--entity", "assets", "--token-stdin"],
        env=env.process_env(),
        input="tok-0123456789\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert mode(db.parent) == 0o700
    assert {p.name: mode(p) for p in db.parent.iterdir()} == {
        p.name: 0o600 for p in db.parent.iterdir()
    }


def test_an_existing_store_keeps_the_mode_its_operator_gave_it(
    tmp_path: Path, permissive_umask: None
) -> None:
    """Only files the worker creates are made private: a store an operator shared
    on purpose (say, with a reporting user's group) keeps its mode."""
    db = tmp_path / "shared.db"
    open_store(f"sqlite:///{db}")
    os.chmod(db, 0o640)
    store = open_store(f"sqlite:///{db}")
    store.add_connection(Connection(id="c1", name="C1", entity_types=("assets",)))
    assert mode(db) == 0o640
