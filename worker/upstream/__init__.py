"""The only HTTP client of the unified API.

Pipeline: ``client.UpstreamClient`` builds the request -> ``transport``
sends it under one whole deadline -> ``http_edge`` caps the decoded body ->
``pagebody`` parses a list body without trusting it -> an
``errors.UpstreamError`` or a ``Page`` goes back to the guard.

``transport.DeadlineTransport`` is also what the webhook deliveries send
through (``worker.outbox.destinations.guarded_transport``), with the SSRF
guard as its resolver policy.
"""
