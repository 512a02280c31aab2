"""Redis key names: one hash tag per connection, and names that cannot be forged."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from worker.coordination import redis_keys as keys
from worker.errors import Kind


def every_key(connection_id: str) -> list[str]:
    """Each per-connection key the module names, for one connection."""
    return [
        *keys.connection_level(connection_id).all(),
        *keys.entity_level(connection_id, "work_orders").all(),
        keys.pause(connection_id),
        keys.one_at_a_time(connection_id),
        keys.entity_index(connection_id),
        *keys.evidence_keys(connection_id),
        keys.rate(connection_id),
        keys.limits(connection_id),
        keys.slots(connection_id),
        keys.slot_waiters(connection_id),
        keys.lease(connection_id, "assets"),
        keys.preflight(connection_id),
        keys.halt_probe(connection_id),
        keys.retry_budget(connection_id, 42),
        keys.notify_lease(connection_id),
    ]


def test_every_key_of_a_connection_lands_in_one_cluster_slot() -> None:
    """One Lua script may touch all of them, on Redis Cluster too."""
    names = every_key("acme-1")
    assert len(set(names)) == len(names), "two purposes share a key"
    assert all(name.startswith("{cb:acme-1}") for name in names)
    assert {key_slot(name.encode()) for name in names} == {key_slot(b"{cb:acme-1}")}


def test_two_connections_share_no_key() -> None:
    assert not set(every_key("acme")) & set(every_key("acme2"))


def test_breaker_levels_are_state_probe_and_window_in_script_order() -> None:
    level = keys.entity_level("c", "assets")
    assert level.all() == ["{cb:c}:et:assets", "{cb:c}:et:assets:probe", "{cb:c}:et:assets:win"]
    assert keys.connection_level("c").all() == ["{cb:c}", "{cb:c}:probe", "{cb:c}:win"]


def test_evidence_has_one_key_per_kind() -> None:
    assert keys.evidence("c", Kind.AUTH) == "{cb:c}:ev:auth"
    assert len(keys.evidence_keys("c")) == len(Kind)


@pytest.mark.parametrize("connection_id", ["", "a{b", "a}b", "a:b", "a b", "x" * 129, "tab\t"])
def test_a_connection_id_that_could_forge_a_tag_or_suffix_is_refused(connection_id: str) -> None:
    with pytest.raises(ValueError, match="cannot be used in a Redis key"):
        keys.tag(connection_id)


@pytest.mark.parametrize("entity_type", ["", "a:win", "a{b}", "a b", "x" * 65, "é"])
def test_an_entity_type_that_could_forge_a_suffix_is_refused(entity_type: str) -> None:
    with pytest.raises(ValueError, match="cannot be used in a Redis key"):
        keys.entity_level("c", entity_type)
    with pytest.raises(ValueError):
        keys.lease("c", entity_type)


def test_the_scan_pattern_matches_the_tag_literally() -> None:
    assert keys.connection_pattern("plain") == "{cb:plain}*"
    assert keys.connection_pattern("a*b?c[d]") == r"{cb:a\*b\?c\[d\]}*"


def test_global_keys_are_outside_every_connection_tag() -> None:
    for name in (
        keys.SCHEDULER_LOCK,
        keys.BEAT_HEARTBEAT,
        keys.SELF_RESUMES,
        keys.housekeeping_step("retention"),
        keys.deliveries("task-1", 0),
        keys.upstream_event_claim("evt_1"),
    ):
        assert name.startswith("entity_sync:") and "{" not in name
