"""One run of a sync end to end: real worker, Redis, the sandbox over HTTP, both stores."""
