"""What differs between SQLite and PostgreSQL: the SQL each is given, and private files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from worker.store.dialects import (
    _create_private,
    _make_private_dirs,
    _sqlite_path,
    dialect_for,
    postgres_dialect,
    sqlite_dialect,
)

STATEMENT = (
    "CREATE TABLE t (id {autoid}, doc {json}, live {bool}); "
    "INSERT INTO t (doc, live) VALUES ({json_param}, ?)"
)


def test_sqlite_keeps_question_marks_and_fills_its_types(tmp_path: Path) -> None:
    sql = sqlite_dialect(f"sqlite:///{tmp_path}/s.db").sql(STATEMENT)
    assert sql == (
        "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT, live INTEGER); "
        "INSERT INTO t (doc, live) VALUES (?, ?)"
    )


def test_postgres_gets_percent_placeholders_jsonb_and_a_cast_json_parameter() -> None:
    sql = postgres_dialect("postgres://u@nowhere.invalid/db").sql(STATEMENT)
    assert sql == (
        "CREATE TABLE t (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, doc JSONB, "
        "live BOOLEAN); INSERT INTO t (doc, live) VALUES (CAST(%s AS JSONB), %s)"
    )
    assert "?" not in sql


def test_a_translation_is_kept_and_the_cache_is_bounded() -> None:
    dialect = postgres_dialect("postgresql://u@nowhere.invalid/db")
    first = dialect.sql("SELECT ?")
    assert dialect.sql("SELECT ?") is first
    for i in range(1100):  # statements with one mark per key: IN (?,?,...)
        dialect.sql("SELECT 1 WHERE x IN (" + ",".join("?" * (i + 1)) + ")")
    assert len(dialect._translated) == 1024


def test_the_url_names_the_dialect(tmp_path: Path) -> None:
    assert dialect_for(f"sqlite:///{tmp_path}/s.db").name == "sqlite"
    assert dialect_for("postgresql://u@nowhere.invalid/db").name == "postgresql"
    assert dialect_for("postgres://u@nowhere.invalid/db").name == "postgresql"


def test_sqlite_urls_are_relative_with_three_slashes_and_absolute_with_four() -> None:
    assert _sqlite_path("sqlite:///var/x.db") == Path("var/x.db")
    assert _sqlite_path("sqlite:////var/x.db") == Path("/var/x.db")


def test_only_postgres_needs_a_migration_lock_and_only_sqlite_an_immediate_begin(
    tmp_path: Path,
) -> None:
    sqlite = sqlite_dialect(f"sqlite:///{tmp_path}/s.db")
    postgres = postgres_dialect("postgresql://u@nowhere.invalid/db")
    assert (sqlite.begin_write, sqlite.migration_lock) == ("BEGIN IMMEDIATE", None)
    assert postgres.begin_write == "BEGIN"
    assert postgres.migration_lock and "advisory" in postgres.migration_lock


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_database_file_and_its_missing_directories_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        database = tmp_path / "a" / "b" / "store.db"
        _create_private(database)
    finally:
        os.umask(old)
    assert _mode(database) == 0o600
    assert _mode(database.parent) == _mode(database.parent.parent) == 0o700


def test_existing_files_and_directories_keep_their_modes(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    database = directory / "store.db"
    database.write_bytes(b"")
    database.chmod(0o640)
    _make_private_dirs(directory)
    _create_private(database)
    assert (_mode(directory), _mode(database)) == (0o755, 0o640)


@pytest.mark.parametrize("statement", ["SELECT 1", "UPDATE t SET a = ? WHERE b = ?"])
def test_sqlite_translation_changes_nothing_without_slots(tmp_path: Path, statement: str) -> None:
    assert sqlite_dialect(f"sqlite:///{tmp_path}/s.db").sql(statement) == statement
