-- admit: may this caller send one request for (connection, entity type)?
-- A function, run by run_admit.lua alone or by record_admit.lua after a record.
-- K (keys): 1 conn state, 2 conn probe, 3 conn window, 4 pause, 5 rate, 6 limits,
--           [7 entity state, 8 entity probe, 9 entity window]
-- token: this caller's probe token, taken if it must probe.
-- Returns {allowed, reason, until, retry_in, conn_gen, entity_gen, probe}.
-- Nothing is written before the decision is known, except the lazy
-- open -> half_open transition and TTL refreshes of halted/blocked state.
local function admit(now, P, K, token)
  local function deny(reason, till, retry_in)
    local t = ''
    if till then t = fmt(till) end
    return {0, reason, t, fmt(retry_in), '0', '0', 0}
  end

  -- Checks one breaker level; returns a denial or nil, whether this caller
  -- must take the level's probe token, and the level's generation.
  local function check(s, lk)
    if s.state == 'open' then
      if s.till > now then return deny('open', s.till, s.till - now), false, s.gen end
      transition(lk, s, 'half_open', now, s.reason, now)
      save(lk.state, s, now, P)
    end
    if s.state == 'blocked' then
      redis.call('PEXPIRE', lk.state, ms(ttl_s(s, now, P)))
      if s.till > now then return deny('blocked', s.till, s.till - now), false, s.gen end
      local holder, exp = probe_holder(lk.probe, now)
      if holder then return deny('blocked', exp, exp - now), false, s.gen end
      return nil, true, s.gen
    end
    if s.state == 'half_open' then
      if probe_holder(lk.probe, now) then
        return deny('half_open_busy', nil, P.busy_retry_s), false, s.gen
      end
      return nil, true, s.gen
    end
    return nil, false, s.gen
  end

  local conn_lk = {state = K[1], probe = K[2], window = K[3]}
  local conn = load(K[1])
  if conn.state == 'halted' then
    redis.call('PEXPIRE', K[1], ms(ttl_s(conn, now, P)))
    return deny('halted', nil, 0)
  end

  local pause_until = tonumber(redis.call('HGET', K[4], 'until'))
  if pause_until and pause_until > now then
    return deny('paused', pause_until, pause_until - now)
  end

  local denial, conn_probe, conn_gen = check(conn, conn_lk)
  if denial then return denial end

  local ent_probe, ent_gen = false, 0
  local ent_lk = nil
  if #K >= 9 then
    ent_lk = {state = K[7], probe = K[8], window = K[9]}
    denial, ent_probe, ent_gen = check(load(K[7]), ent_lk)
    if denial then return denial end
  end

  local rate, burst = rate_limits(K[6], P.rate_per_s, P.burst)
  local ok, retry_in, new_tat = gcra_check(K[5], now, rate, burst)
  if not ok then return deny('rate_limited', now + retry_in, retry_in) end

  gcra_commit(K[5], now, new_tat)
  if conn_probe then take_probe(K[2], token, now, P) end
  if ent_probe then take_probe(ent_lk.probe, token, now, P) end
  local probe = 0
  if conn_probe or ent_probe then probe = 1 end
  return {1, 'ok', '', '0', int(conn_gen), int(ent_gen), probe}
end
