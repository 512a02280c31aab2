"""Hostile data and faults: every scenario, odd records, the fast cases of the fault suite."""
