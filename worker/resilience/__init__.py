"""What happens around every upstream request.

Pipeline: ``guard.Guard.call`` asks ``breaker.Breaker.admit`` (one Lua script
in ``lua/``: breakers, pause, GCRA rate) -> calls upstream -> ``classify``
turns the outcome into a (kind, scope) verdict and its action by one rule
table -> ``breaker.Breaker.record`` counts it and may trip or close a breaker
-> the guard acts (halt, pause, block, open, retry, fail) and reports each
transition. Around a run: ``limits`` (concurrency slots, per-connection
overrides), ``retry`` timing and budgets (``backoff``, ``retry_budget``).
"""
