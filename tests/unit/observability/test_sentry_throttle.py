"""The Sentry throttle: a few events per kind per window, and a count of the rest."""

from __future__ import annotations

from typing import Any

from worker.observability.sentry_throttle import RepeatThrottle, kind_of


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_kind_gets_its_own_budget_per_window() -> None:
    clock = Clock()
    throttle = RepeatThrottle(limit=3, window_s=60, clock=clock)
    assert [throttle.admit("a") for _ in range(5)] == [0, 0, 0, None, None]
    assert throttle.admit("b") == 0  # another problem is not held back by the first
    clock.now += 59.9
    assert throttle.admit("a") is None
    clock.now += 0.1
    # A new window: the first event out tells how many were dropped before it.
    assert [throttle.admit("a") for _ in range(4)] == [3, 0, 0, None]
    clock.now += 60
    assert throttle.admit("a") == 1


def _log_event(template: str, formatted: str) -> dict[str, Any]:
    return {"logger": "entity_sync", "logentry": {"message": template, "formatted": formatted}}


def test_log_records_are_one_kind_per_template_whatever_their_arguments() -> None:
    one = _log_event("job rejected: %s", "job rejected: entity_sync.sync_entity: bad 1")
    two = _log_event("job rejected: %s", "job rejected: entity_sync.sync_entity: bad 2")
    other = _log_event("store unreachable: %s", "store unreachable: x")
    assert kind_of(one) == kind_of(two) != kind_of(other)


def test_fingerprints_and_exceptions_name_their_kind() -> None:
    halted = {"fingerprint": ["entity-sync", "acme", "auth"], "logentry": {"message": "x"}}
    assert kind_of(halted) == "fingerprint:entity-sync|acme|auth"
    raised_in = {
        "exception": {
            "values": [
                {"type": "KeyError", "stacktrace": {"frames": [{"module": "a", "function": "f"}]}}
            ]
        }
    }
    elsewhere = {
        "exception": {
            "values": [
                {"type": "KeyError", "stacktrace": {"frames": [{"module": "b", "function": "g"}]}}
            ]
        }
    }
    assert kind_of(raised_in) == "exception:KeyError:a.f"
    assert kind_of(raised_in) != kind_of(elsewhere)
    assert kind_of({"exception": {"values": [{"type": "ValueError"}]}}) == "exception:ValueError:."
