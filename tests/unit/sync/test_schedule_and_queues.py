"""Pure parts of scheduling and routing: slots, offsets, queues."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker.jobs import BACKFILL_QUEUE, MANUAL_QUEUE, SYNC_QUEUE, sync_queue
from worker.sync.schedule import current_slot, offset_s


@given(st.text(min_size=1, max_size=40), st.integers(1, 86_400), st.floats(0, 2e9))
def test_slots_advance_once_per_interval(connection_id: str, interval: int, now: float) -> None:
    slot = current_slot(connection_id, interval, now)
    assert current_slot(connection_id, interval, now + interval) == slot + 1
    assert 0 <= offset_s(connection_id, interval) < interval


def test_offsets_spread_connections_over_the_interval() -> None:
    offsets = {offset_s(f"c{n:04d}", 900) for n in range(1000)}
    assert len(offsets) > 500  # not all in the same second


def test_queues_keep_manual_work_ahead_of_backfills() -> None:
    assert sync_queue(trigger="manual", full=False, first_sync=True) == MANUAL_QUEUE
    assert sync_queue(trigger="manual", full=True, first_sync=False) == BACKFILL_QUEUE
    assert sync_queue(trigger="scheduled", full=False, first_sync=True) == BACKFILL_QUEUE
    assert sync_queue(trigger="scheduled", full=False, first_sync=False) == SYNC_QUEUE


def test_a_resumed_job_goes_back_by_the_same_queue_rule() -> None:
    from worker.sync.recovery import _queue_of

    # Recovery work: the ordinary queue, or backfill for a full read; never manual.
    assert _queue_of(full=False) == sync_queue(trigger="recovery", full=False, first_sync=False)
    assert _queue_of(full=False) == SYNC_QUEUE
    assert _queue_of(full=True) == BACKFILL_QUEUE
