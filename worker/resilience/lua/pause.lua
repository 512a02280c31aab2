-- pause: the whole connection waits until now + seconds (429 Retry-After).
-- Extends an existing pause, never shortens it. Then the connection runs one
-- request at a time for a full window more (one_at_a_time.lua), and the
-- request that met the 429, if it was that one request, is over.
-- KEYS: 1 pause, 2 one-at-a-time
-- ARGV: 1 now override, 2 policy JSON, 3 seconds (already clamped), 4 reason,
--       5 in-flight token of the request that met the 429 ('' if none)
-- Returns {transitioned (no pause was active), until}.
local now = now_s()
local seconds = tonumber(ARGV[3])
local till = now + seconds
local v = redis.call('HMGET', KEYS[1], 'until', 'reason')
local current = tonumber(v[1])
local was_active = current ~= nil and current > now
start_one_at_a_time(KEYS[2], now, math.max(till, current or 0), seconds)
end_in_flight(KEYS[2], ARGV[5] or '')
if was_active and current >= till then
  redis.call('PEXPIRE', KEYS[1], ms(current - now + 1))
  return {0, fmt(current)}
end
redis.call('HSET', KEYS[1], 'until', fmt(till), 'reason', ARGV[4], 'since', fmt(now))
redis.call('PEXPIRE', KEYS[1], ms(till - now + 1))
if was_active then return {0, fmt(till)} end
return {1, fmt(till)}
