-- record: apply one admitted call's outcome to its breaker levels.
-- A function, run by run_record.lua alone or by record_admit.lua.
-- K (keys): 1 conn state, 2 conn probe, 3 conn window, 4 entity index,
--           5 one-at-a-time, [6 entity state, 7 entity probe, 8 entity window,
--           [9 evidence]]
-- A (args): 1 conn gen, 2 entity gen, 3 probe token ('' when not a probe),
--           4 conn outcome, 5 entity outcome (each 'success' | 'failure' |
--           'neutral'), 6 kind, 7 retry_after (s), 8 jitter draw in [0, 1],
--           9 entity type, 10 in-flight token ('' unless admitted one at a time)
-- Returns {conn status, state, gen, from, until, reason, the same six for the
--          entity level, distinct entity types with this kind}; status is
-- 'applied' or 'stale', from is '' unless this call made the transition.
local function record(now, P, K, A)
  local token = A[3]
  local kind = A[6]
  local retry_after = tonumber(A[7]) or 0
  local jitter = tonumber(A[8])

  -- Adds one call to the current bucket, drops buckets that left the window,
  -- and returns the calls and failures still inside it.
  local function window_add(key, failed)
    local idx = math.floor(now / P.bucket_s)
    redis.call('HINCRBY', key, 'c:' .. idx, 1)
    if failed then redis.call('HINCRBY', key, 'f:' .. idx, 1) end
    local all = redis.call('HGETALL', key)
    local calls, fails, dead = 0, 0, {}
    for i = 1, #all, 2 do
      local field, n = all[i], tonumber(all[i + 1])
      if tonumber(string.sub(field, 3)) <= idx - P.buckets then
        table.insert(dead, field)
      elseif string.sub(field, 1, 1) == 'c' then
        calls = calls + n
      else
        fails = fails + n
      end
    end
    if #dead > 0 then redis.call('HDEL', key, unpack(dead)) end
    redis.call('PEXPIRE', key, ms(P.buckets * P.bucket_s + 1))
    return calls, fails
  end

  local function trip(lk, s, reason)
    local interval = open_interval(P, s.openings, jitter, retry_after)
    s.openings = s.openings + 1
    return transition(lk, s, 'open', now + interval, reason, now)
  end

  local function result(status, s, from)
    return {status, s.state, int(s.gen), from, fmt(s.till), s.reason}
  end

  local function record_level(lk, gen, outcome)
    local s = load(lk.state)
    if s.gen ~= gen then return result('stale', s, ''), false end
    local from = ''
    if s.state == 'half_open' or s.state == 'blocked' then
      -- Only the probe was admitted in this generation; a different live
      -- token means our permit expired and another caller now probes.
      local holder = probe_holder(lk.probe, now)
      if token == '' or (holder and holder ~= token) then return result('stale', s, ''), false end
      redis.call('DEL', lk.probe)
      if outcome == 'success' then
        s.openings = 0
        from = transition(lk, s, 'closed', 0, '', now)
      elseif outcome == 'failure' and s.state == 'half_open' then
        from = trip(lk, s, kind .. ': probe failed')
      elseif outcome == 'failure' then
        -- Still blocked: wait for the next slow re-probe (no transition).
        s.till = now + P.block_reprobe_s
      end
      -- neutral: the probe told nothing; its token is released for another.
    elseif s.state == 'closed' then
      if outcome == 'neutral' then return result('applied', s, ''), false end
      local calls, fails = window_add(lk.window, outcome == 'failure')
      if outcome == 'success' then
        s.consec = 0
      else
        s.consec = s.consec + 1
        if s.consec >= P.consecutive_failures then
          from = trip(lk, s, kind .. ': ' .. int(s.consec) .. ' consecutive failures')
        elseif calls >= P.min_calls and fails >= P.failure_rate * calls then
          from = trip(lk, s, kind .. ': ' .. int(fails) .. ' of ' .. int(calls) .. ' calls failed')
        end
      end
    else
      -- open or halted under the same generation: nothing was admitted here.
      return result('stale', s, ''), false
    end
    save(lk.state, s, now, P)
    return result('applied', s, from), true
  end

  -- A half-open connection is on trial, and this call may be its one probe:
  -- a counting failure fails the trial even when it is scoped to the entity
  -- type. Were it neutral there, the probe would be released and a second and
  -- third caller would probe in the same half-open spell, and the reopening
  -- would lose its backoff.
  local conn_outcome = A[4]
  if conn_outcome == 'neutral' and A[5] == 'failure' and token ~= ''
     and redis.call('HGET', K[1], 'state') == 'half_open' then
    conn_outcome = 'failure'
  end
  local out = record_level({state = K[1], probe = K[2], window = K[3]},
                           tonumber(A[1]), conn_outcome)
  local distinct = 0
  if #K >= 8 then
    local ent, saved = record_level({state = K[6], probe = K[7], window = K[8]},
                                    tonumber(A[2]), A[5])
    for i = 1, 6 do table.insert(out, ent[i]) end
    if saved then
      redis.call('SADD', K[4], A[9])
      redis.call('PEXPIRE', K[4], ms(P.block_ttl_s))
    end
    if #K >= 9 then
      -- Escalation evidence counts even for stale or non-counting failures:
      -- it is a fact about the upstream, not about this breaker's state.
      redis.call('ZADD', K[9], fmt(now), A[9])
      redis.call('ZREMRANGEBYSCORE', K[9], '-inf', '(' .. fmt(now - P.evidence_window_s))
      redis.call('PEXPIRE', K[9], ms(P.evidence_window_s))
      distinct = redis.call('ZCARD', K[9])
    end
  else
    for i = 1, 6 do table.insert(out, '') end
  end
  table.insert(out, distinct)
  -- The one request in flight is over, unless it met a 429: then pause.lua
  -- frees it once the pause is written, so nothing is admitted in between.
  if kind ~= 'rate_limited' then end_in_flight(K[5], A[10]) end
  return out
end
