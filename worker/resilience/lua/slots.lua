-- slots: a per-connection concurrency cap. The zset holds holders scored by
-- the expiry (ms) of their slot; expired holders are pruned on every call,
-- so a crashed worker's slot frees itself after its TTL.
-- A refused acquire marks the connection as having a waiter (KEYS[3], for
-- ARGV[7] seconds): the task that next frees a slot reads the mark and wakes
-- the job parked for one (worker/sync/slot_wait.py).
-- KEYS: 1 slots, 2 limits, 3 waiting mark
-- ARGV: 1 now override, 2 op ('acquire' | 'renew' | 'release'), 3 holder,
--       4 ttl seconds, 5 cap ('' = the limits override or 6), 6 default cap,
--       7 waiting mark ttl seconds
-- Returns 1 (held / released) or 0 (cap reached / not held).
local now = now_s()
local op, holder = ARGV[2], ARGV[3]
local now_ms = math.floor(now * 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)

local function hold()
  redis.call('ZADD', KEYS[1], now_ms + math.ceil(tonumber(ARGV[4]) * 1000), holder)
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[1], math.max(1000, tonumber(last[2]) - now_ms + 1000))
  return 1
end

if op == 'release' then
  return redis.call('ZREM', KEYS[1], holder)
end
local held = redis.call('ZSCORE', KEYS[1], holder)
if op == 'renew' then
  if not held then return 0 end
  return hold()
end
if held then return hold() end
local cap = tonumber(ARGV[5])
if not cap then cap = tonumber(redis.call('HGET', KEYS[2], 'max_concurrency')) or tonumber(ARGV[6]) end
if redis.call('ZCARD', KEYS[1]) >= cap then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[7])
  return 0
end
return hold()
