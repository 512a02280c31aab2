-- Pass a lease on. KEYS[1] lease; ARGV[1] expected holder, ARGV[2] new holder,
-- ARGV[3] ttl ms. Returns 1 when moved, 0 when the lease was not ARGV[1]'s.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
