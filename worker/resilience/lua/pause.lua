-- pause: the whole connection waits until now + seconds (429 Retry-After).
-- Extends an existing pause, never shortens it.
-- KEYS: 1 pause
-- ARGV: 1 now override, 2 policy JSON, 3 seconds (already clamped), 4 reason
-- Returns {transitioned (no pause was active), until}.
local now = now_s()
local till = now + tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'until', 'reason')
local current = tonumber(v[1])
local was_active = current ~= nil and current > now
if was_active and current >= till then
  redis.call('PEXPIRE', KEYS[1], ms(current - now + 1))
  return {0, fmt(current)}
end
redis.call('HSET', KEYS[1], 'until', fmt(till), 'reason', ARGV[4], 'since', fmt(now))
redis.call('PEXPIRE', KEYS[1], ms(till - now + 1))
if was_active then return {0, fmt(till)} end
return {1, fmt(till)}
