"""The test and demo harness: everything that runs *around* the worker, never in it.

- ``harness.sandbox``: the simulated unified API (docs/upstream-api.md) with
  its fault scenarios (``harness/sandbox/README.md``);
- ``harness.testing``: what tests, bench, chaos and the demo share (running
  sandboxes, worker and beat processes, a webhook receiver, the breaker model);
- ``harness.demo`` and ``harness.demo_receiver``: ``make demo``.

Entry point: ``python -m harness sandbox ...`` and ``python -m harness demo``
(``entity-sync sandbox`` and ``entity-sync demo`` forward here).

It is not part of the product: nothing in ``worker/`` or ``tasks/`` imports it
(an import-linter contract), and the worker's wheel does not contain it. It is
installed for development by ``make install`` (``harness/pyproject.toml``).
"""
