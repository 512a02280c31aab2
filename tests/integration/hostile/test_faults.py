"""The fast cases of the fault suite (``make chaos`` runs them all, longer).

Each case runs on its own redis-server (broker and coordination) and its own
store; see ``chaos/``. The assertions are the promises of RELIABILITY.md.
"""

from __future__ import annotations

import pytest

from chaos import broker, kills, poison, redis_faults

pytestmark = pytest.mark.integration


def test_sigkill_at_every_point_of_a_sync_loses_and_duplicates_nothing() -> None:
    result = kills.run(kills=4, seed=3)  # each point once, one of them the whole worker
    assert result.injected == 4
    assert "before_commit 1, during_commit 1, after_commit 1, before_ack 1" in result.notes[0]
    assert result.records_checked > 4000
    assert (result.records_lost, result.stale, result.duplicates) == (0, 0, 0), result
    assert result.survived, result


def test_a_redis_restart_mid_sync_keeps_the_worker_up_and_the_run_completes() -> None:
    result = redis_faults.restart(restarts=2)
    assert result.injected == 2
    assert result.records_checked > 5000
    assert (result.records_lost, result.stale, result.duplicates) == (0, 0, 0), result
    assert "worker died 0 times" in result.outcome, result
    assert "0 interrupted run(s) never finished" in result.outcome, result
    assert result.survived, result


def test_a_frozen_redis_is_logged_within_seconds_and_the_run_resumes() -> None:
    result = redis_faults.outage(seconds=15)
    assert "worker stayed up, said Redis was unreachable" in result.outcome, result
    # The first line may come from the coordination side ("Redis unreachable") or
    # from the broker on the same Redis ("broker redis://... unreachable"): both say it.
    first = result.notes[-1].lower()
    assert "unreachable" in first and "redis" in first, result
    assert (result.records_lost, result.stale, result.duplicates) == (0, 0, 0), result
    assert result.survived, result


def test_an_unreachable_broker_gives_the_client_a_clear_error_within_seconds() -> None:
    result = broker.run()
    assert result.injected == 3
    assert result.survived, result
    assert "BrokerUnavailable" in result.notes[0]


def test_a_poison_job_is_dead_lettered_after_capped_deliveries_and_others_complete() -> None:
    result = poison.run(max_deliveries=3)
    assert "delivered 4 times" in result.outcome, result
    assert "kind poison" in result.outcome and "healthy job: succeeded" in result.outcome
    assert result.records_lost == 0 and result.duplicates == 0
    assert result.survived, result
