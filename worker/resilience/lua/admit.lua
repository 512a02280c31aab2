-- admit: may this caller send one request for (connection, entity type)?
-- A function, run by run_admit.lua alone or by record_admit.lua after a record.
-- K (keys): 1 conn state, 2 conn probe, 3 conn window, 4 pause, 5 rate, 6 limits,
--           7 one-at-a-time, [8 entity state, 9 entity probe, 10 entity window]
-- token: this caller's token, taken as a probe token if it must probe and as
-- the one request in flight while the connection runs one at a time.
-- Returns {allowed, reason, until, retry_in, conn_gen, entity_gen, probe,
--          one_at_a_time}.
-- Nothing is written before the decision is known, except the lazy
-- open -> half_open transition and TTL refreshes of halted/blocked state.
local function admit(now, P, K, token)
  local function deny(reason, till, retry_in)
    local t = ''
    if till then t = fmt(till) end
    return {0, reason, t, fmt(retry_in), '0', '0', 0, 0}
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
  if #K >= 10 then
    ent_lk = {state = K[8], probe = K[9], window = K[10]}
    denial, ent_probe, ent_gen = check(load(K[8]), ent_lk)
    if denial then return denial end
  end

  local rate, burst = rate_limits(K[6], P.rate_per_s, P.burst)
  local ok, retry_in, new_tat = gcra_check(K[5], now, rate, burst)
  if not ok then return deny('rate_limited', now + retry_in, retry_in) end

  -- After a 429 the connection runs one request at a time until a full
  -- Retry-After window passes without one (pause.lua sets the mode): a
  -- request sent beside another could land inside the next window.
  local single = one_at_a_time(K[7], now)
  if single == 'busy' then return deny('one_at_a_time', nil, P.one_at_a_time_poll_s) end

  gcra_commit(K[5], now, new_tat)
  if single == 'free' then take_in_flight(K[7], token, now, P) end
  if conn_probe then take_probe(K[2], token, now, P) end
  if ent_probe then take_probe(ent_lk.probe, token, now, P) end
  local probe = 0
  if conn_probe or ent_probe then probe = 1 end
  local in_flight = 0
  if single == 'free' then in_flight = 1 end
  return {1, 'ok', '', '0', int(conn_gen), int(ent_gen), probe, in_flight}
end
