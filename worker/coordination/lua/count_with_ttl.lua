-- Add one to a counter that expires ARGV[1] seconds after its last count.
-- KEYS[1] counter. Returns the new count (scripts.TtlCounter: delivery
-- counts, retry budgets). One script, so the count and its expiry are one
-- atomic step that can also go in a pipeline with other scripts.
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return count
