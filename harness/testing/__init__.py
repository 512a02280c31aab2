"""Helpers that tests, bench, chaos and the demo share.

Pipeline: ``sandbox.running_sandbox`` starts the simulated unified API ->
``processes`` starts real worker and beat processes against it (one command
line, one way to stop them; ``hooked_worker`` runs one after a test-only
module installed fault hooks) -> ``receiver.WebhookReceiver`` checks what the
outbox delivers, with ``standardwebhooks`` and the deprecated header.
``memory_breaker`` is the breaker model the Lua scripts are checked against,
and the in-memory breaker the fast guard tests run on.
"""
