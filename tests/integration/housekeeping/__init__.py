"""Beat and the housekeeping tick: schedules, parked jobs, reconciliation, beat optional."""
