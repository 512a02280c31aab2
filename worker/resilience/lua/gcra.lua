-- GCRA (generic cell rate algorithm), mirrors limits.gcra. The state is one
-- number, the theoretical arrival time (TAT) of the next request.
-- Returns allowed, retry_in seconds, and the TAT to store when granted.
local function gcra_check(key, now, rate, burst)
  local interval = 1 / rate
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - burst * interval
  if now < allow_at then return false, allow_at - now, tat end
  return true, 0, new_tat
end

local function gcra_commit(key, now, new_tat)
  redis.call('SET', key, fmt(new_tat), 'PX', ms(new_tat - now + 1))
end

-- Per-connection overrides from the limits hash, else the policy default.
local function rate_limits(limits_key, default_rate, default_burst)
  local v = redis.call('HMGET', limits_key, 'rate_per_s', 'burst')
  return tonumber(v[1]) or default_rate, tonumber(v[2]) or default_burst
end
