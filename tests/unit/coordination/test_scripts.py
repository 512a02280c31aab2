"""Lua sources are read from the package, and Redis errors become CoordinationError."""

from __future__ import annotations

import pytest
import redis

from worker.coordination.scripts import coordination, lua_source
from worker.errors import CoordinationError


def test_lua_sources_are_read_from_the_packages_lua_folder_and_joined_in_order() -> None:
    one = lua_source("worker.coordination", "lease_acquire")
    two = lua_source("worker.coordination", "lease_release")
    assert one.strip() and two.strip()
    assert lua_source("worker.coordination", "lease_acquire", "lease_release") == f"{one}\n{two}"


def test_a_missing_script_is_an_error_not_an_empty_source() -> None:
    with pytest.raises(FileNotFoundError):
        lua_source("worker.coordination", "no_such_script")


REDIS_ERRORS = [redis.ConnectionError("refused"), redis.TimeoutError("slow"), redis.ResponseError()]


@pytest.mark.parametrize("error", REDIS_ERRORS)
def test_any_redis_error_is_translated_with_what_was_being_done(error: Exception) -> None:
    expected = f"taking the lease: {type(error).__name__}"
    with pytest.raises(CoordinationError, match=expected) as info, coordination("taking the lease"):
        raise error
    assert info.value.__cause__ is error


def test_other_errors_pass_through_untouched() -> None:
    with pytest.raises(KeyError), coordination("anything"):
        raise KeyError("not Redis")
