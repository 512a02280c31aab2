-- Shared helpers, prepended to every breaker and limits script.
-- Convention for every script: ARGV[1] is a test-only clock override ("" in
-- production, where Redis TIME is the only clock); breaker scripts take their
-- policy as JSON in ARGV[2].

local function now_s()
  local o = ARGV[1]
  if o ~= nil and o ~= '' then return tonumber(o) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Numbers go back to Python as strings: Redis truncates Lua numbers to integers.
local function fmt(x) return string.format('%.6f', x) end
local function int(x) return string.format('%d', x) end

local function ms(seconds)
  local v = math.ceil(seconds * 1000)
  if v < 1000 then v = 1000 end
  return v
end

-- A breaker level: one hash; an absent hash is a fresh closed breaker, gen 0.
local function load(key)
  local v = redis.call('HMGET', key, 'state', 'until', 'reason', 'gen', 'openings', 'consec', 'since')
  return {state = v[1] or 'closed', till = tonumber(v[2]) or 0, reason = v[3] or '',
          gen = tonumber(v[4]) or 0, openings = tonumber(v[5]) or 0,
          consec = tonumber(v[6]) or 0, since = tonumber(v[7]) or 0}
end

-- How long a level's hash must live: long enough to outlast its own until,
-- long (and refreshed) for halted and blocked, which have no timed way out.
local function ttl_s(s, now, P)
  if s.state == 'halted' then return P.halt_ttl_s end
  local rest = s.till - now
  if rest < 0 then rest = 0 end
  if s.state == 'blocked' then return math.max(P.block_ttl_s, rest + P.state_ttl_s) end
  return rest + P.state_ttl_s
end

local function save(key, s, now, P)
  redis.call('HSET', key, 'state', s.state, 'until', fmt(s.till), 'reason', s.reason,
             'gen', int(s.gen), 'openings', int(s.openings), 'consec', int(s.consec),
             'since', fmt(s.since))
  redis.call('PEXPIRE', key, ms(ttl_s(s, now, P)))
end

-- Every transition bumps the generation and resets counters and the probe.
local function transition(lk, s, to, till, reason, now)
  local from = s.state
  s.state = to
  s.till = till
  s.reason = reason
  s.gen = s.gen + 1
  s.consec = 0
  s.since = now
  redis.call('DEL', lk.window, lk.probe)
  return from
end

-- The probe token's value carries its own expiry so a test clock agrees
-- with the key's PX; in production both say the same thing.
local function probe_holder(key, now)
  local v = redis.call('GET', key)
  if not v then return nil, 0 end
  local sp = string.find(v, ' ', 1, true)
  local exp = tonumber(string.sub(v, 1, sp - 1))
  if exp <= now then return nil, 0 end
  return string.sub(v, sp + 1), exp
end

local function take_probe(key, token, now, P)
  redis.call('SET', key, fmt(now + P.probe_ttl_s) .. ' ' .. token, 'PX', ms(P.probe_ttl_s))
end

-- Mirrors breaker.open_interval: full jitter under an exponential cap,
-- floored at min_open_s and at the upstream's Retry-After.
local function open_interval(P, openings, jitter, retry_after)
  local cap = math.min(P.max_open_s, P.base_open_s * math.pow(2, math.min(openings, 64)))
  local v = math.max(P.min_open_s, jitter * cap)
  if retry_after > v then v = retry_after end
  return v
end
