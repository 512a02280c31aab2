"""What an operator runs: the ``entity-sync`` command and the dashboard.

Pipeline: ``cli.main`` parses a command -> builds a ``Runtime`` and unpacks
it -> ``status``, ``waiting`` (``sync --wait``), ``breaker_commands``,
``removal`` do the work; ``dashboard/`` serves the same status over HTTP.
``sandbox`` and ``demo`` forward to the test and demo harness (``harness/``).
"""
