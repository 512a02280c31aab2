"""The only HTTP client of the unified API.

Pipeline: ``client.UpstreamClient`` builds the request -> ``http_edge``
bounds it (deadline, capped body, refused redirects) -> ``pagebody`` parses
a list body without trusting it -> an ``errors.UpstreamError`` or a ``Page``
goes back to the guard.
"""
