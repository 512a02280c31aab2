"""Events for the integrating service, written with the transition that caused them.

Pipeline: ``transitions.TransitionRecorder`` writes a transition and, when
it needs one, its event (``worker.events``) in one transaction ->
``notifier.relay`` publishes a delivery job (the publish function is passed
in) -> ``notifier.deliver_pending`` delivers a connection's events in order ->
``webhooks`` signs and POSTs each to a URL that ``destinations`` (the SSRF
guard) checked.
"""
