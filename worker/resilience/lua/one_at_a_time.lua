-- One request at a time per connection after a 429 (docs/design.md, "Around
-- each request"). The hash {cb:<c>}:single holds 'until' (the mode's end: a
-- full Retry-After window after the pause ends, pushed on by every 429),
-- 'holder' (the token of the one request in flight) and 'exp' (when that
-- holder is presumed dead: probe_ttl_s, longer than a call's whole deadline).

-- 'off' (the mode is over), 'busy' (a request is in flight) or 'free'.
local function one_at_a_time(key, now)
  local v = redis.call('HMGET', key, 'until', 'holder', 'exp')
  if (tonumber(v[1]) or 0) <= now then return 'off' end
  if v[2] and (tonumber(v[3]) or 0) > now then return 'busy' end
  return 'free'
end

local function take_in_flight(key, token, now, P)
  redis.call('HSET', key, 'holder', token, 'exp', fmt(now + P.probe_ttl_s))
end

-- Frees the in-flight slot when ``token`` holds it (compare-and-delete).
local function end_in_flight(key, token)
  if token ~= '' and redis.call('HGET', key, 'holder') == token then
    redis.call('HDEL', key, 'holder', 'exp')
  end
end

-- A 429 paused the connection until ``till`` for ``seconds``: one at a time
-- until a full window more has passed.
local function start_one_at_a_time(key, now, till, seconds)
  local mode_until = till + seconds
  local current = tonumber(redis.call('HGET', key, 'until')) or 0
  if current > mode_until then mode_until = current end
  redis.call('HSET', key, 'until', fmt(mode_until))
  redis.call('PEXPIRE', key, ms(mode_until - now + 1))
end
