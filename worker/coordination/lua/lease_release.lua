-- Compare-and-delete. KEYS[1] lease; ARGV[1] holder. Returns 1 when deleted.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
