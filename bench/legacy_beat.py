"""The beat schedule before the housekeeping tick, for ``bench.housekeeping`` only.

``celery -A bench.legacy_beat beat`` sends the five entries beat used to send
(two of them every second); the tasks they name are still registered in
``tasks/schedule.py`` and ``tasks/notify.py``, so the old layout runs for real.
"""

from __future__ import annotations

from worker.celeryapp.app import app

LEGACY_SCHEDULE = {
    "schedule-syncs": {"task": "entity_sync.housekeeping.schedule", "schedule": 1.0},
    "resume-parked-jobs": {"task": "entity_sync.housekeeping.resume_parked", "schedule": 1.0},
    "resend-stalled-runs": {"task": "entity_sync.housekeeping.resend_stalled", "schedule": 10.0},
    "probe-halted-and-blocked": {"task": "entity_sync.housekeeping.probe", "schedule": 30.0},
    "sweep-outbox": {"task": "entity_sync.housekeeping.sweep_outbox", "schedule": 5.0},
}
app.conf.beat_schedule = LEGACY_SCHEDULE

__all__ = ["app"]
