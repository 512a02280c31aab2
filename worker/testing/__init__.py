"""Helpers that tests, bench, chaos and the demo share.

Pipeline: ``sandbox.running_sandbox`` starts the simulated unified API ->
``processes`` starts real worker and beat processes against it.
"""
