-- Take or renew a lease. KEYS[1] lease; ARGV[1] holder, ARGV[2] ttl ms.
-- Returns the holder after the call (ours if it equals ARGV[1]).
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return current
