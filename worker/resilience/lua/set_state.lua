-- set_state: a direct transition of one breaker level (halt, resume/close,
-- block, unblock, force open). Idempotent: repeating it changes nothing but
-- TTLs and, for block/open, the until; only the caller that changed the
-- state sees transitioned = 1.
-- KEYS: 1 state, 2 probe, 3 window, 4 entity index (entity levels only)
-- ARGV: 1 now override, 2 policy JSON, 3 op ('halt' | 'close' | 'unblock' |
--       'block' | 'open'), 4 seconds (op 'open'), 5 reason, 6 entity type
-- Returns {transitioned, from, state, gen, until, reason}.
local now = now_s()
local P = cjson.decode(ARGV[2])
local op, reason = ARGV[3], ARGV[5]
local lk = {state = KEYS[1], probe = KEYS[2], window = KEYS[3]}
local s = load(KEYS[1])
local from = s.state
local moved = 0

local function go(to, till)
  if to == 'closed' then s.openings = 0 end
  transition(lk, s, to, till, reason, now)
  moved = 1
end

if op == 'halt' then
  if s.state ~= 'halted' then go('halted', 0) end
elseif op == 'close' then
  if s.state ~= 'closed' then go('closed', 0) end
elseif op == 'unblock' then
  if s.state == 'blocked' then go('closed', 0) end
elseif op == 'block' then
  if s.state ~= 'blocked' then
    go('blocked', now + P.block_reprobe_s)
  else
    s.till = math.max(s.till, now + P.block_reprobe_s)
  end
elseif op == 'open' then
  local till = now + tonumber(ARGV[4])
  if s.state ~= 'open' then
    go('open', till)
  else
    s.till = till
    s.reason = reason
  end
else
  return redis.error_reply('unknown op ' .. op)
end

if moved == 1 or s.state ~= 'closed' or redis.call('EXISTS', KEYS[1]) == 1 then
  save(KEYS[1], s, now, P)
  if #KEYS >= 4 then
    redis.call('SADD', KEYS[4], ARGV[6])
    redis.call('PEXPIRE', KEYS[4], ms(P.block_ttl_s))
  end
end
return {moved, from, s.state, int(s.gen), fmt(s.till), s.reason}
