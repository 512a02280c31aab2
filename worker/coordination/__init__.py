"""Redis as the workers' shared memory.

Pipeline: ``client.redis_client`` makes every client (explicit timeouts) ->
``redis_keys`` names every key (one hash tag per connection) -> Lua scripts
are loaded by ``scripts.lua`` and every Redis error becomes
``CoordinationError`` (``scripts.coordination``) -> ``lease`` is the one
lock: pair leases of a run and the short locks of housekeeping.
"""
