"""What a person sees of the worker besides logs: Sentry.

Pipeline: ``sentry.init_sentry`` at process start -> each task's scope is
tagged -> ``report_transition`` sends one event per problem -> ``scrub``
drops expected outcomes and redacts with ``worker.redaction.redact``;
``sentry_throttle`` keeps a repeating problem from flooding.
"""
