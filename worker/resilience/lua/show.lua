-- show: one connection's breakers as the dashboard and `status` read them,
-- for many connections in one pipeline (Breaker.show_many). Read only.
-- KEYS: 1 connection state, 2 its probe, 3 its window, 4 pause, 5 entity index
-- ARGV: 1 now override, 2 bucket_s, 3 buckets (of the failure-rate window)
-- The entity levels are the index's members; their keys are named from
-- KEYS[1] (the connection's hash tag), so they share its slot.
-- Returns one string, fields separated by \031 (unit separator; removed from
-- reasons): now, pause until, pause reason, then per level: name, state,
-- since, until, reason, gen, openings, consec, calls, failures, probe expiry.
-- The connection level always comes first; an entity level that is closed with
-- no failure in its window or in a row is left out (to a reader it is the same
-- as no state at all), so a healthy fleet costs a few fields a connection.
local SEP = '\031'
local now = now_s()
local bucket_s, buckets = tonumber(ARGV[2]), tonumber(ARGV[3])
-- The window's live buckets are named as record.lua names them ('c:' .. idx).
local last = math.floor(now / bucket_s)
local C, F = {}, {}
for idx = last - buckets + 1, last do
  C[#C + 1] = 'c:' .. idx
  F[#F + 1] = 'f:' .. idx
end
local function sum(key, names)
  local n = 0
  for _, v in ipairs(redis.call('HMGET', key, unpack(names))) do
    if v then n = n + tonumber(v) end
  end
  return n
end
local function clean(s) return (string.gsub(s or '', SEP, ' ')) end
local pause = redis.call('HMGET', KEYS[4], 'until', 'reason')
local out = {fmt(now), pause[1] or '', clean(pause[2])}

local function level(name, state_key, window_key, probe_key, always)
  local head = redis.call('HMGET', state_key, 'state', 'consec')
  local state = head[1] or 'closed'
  local consec = tonumber(head[2]) or 0
  local failures = sum(window_key, F)
  if not always and state == 'closed' and consec == 0 and failures == 0 then
    return
  end
  local v = redis.call('HMGET', state_key, 'since', 'until', 'reason', 'gen', 'openings')
  local probe_exp = 0
  if state ~= 'closed' then  -- a probe is taken only by a half-open or blocked level
    local probe = redis.call('GET', probe_key)
    if probe then probe_exp = tonumber(string.match(probe, '^(%S+)')) or 0 end
  end
  for _, x in ipairs({name, state, v[1] or '', v[2] or '', clean(v[3]), v[4] or '0',
                      v[5] or '0', int(consec), int(sum(window_key, C)), int(failures),
                      fmt(probe_exp)}) do
    out[#out + 1] = x
  end
end

level('connection', KEYS[1], KEYS[3], KEYS[2], true)
local entities = redis.call('SMEMBERS', KEYS[5])
table.sort(entities)
for _, e in ipairs(entities) do
  local base = KEYS[1] .. ':et:' .. e
  level(e, base, base .. ':win', base .. ':probe', false)
end
return table.concat(out, SEP)
