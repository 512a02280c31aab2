-- record_admit: record one call's outcome, then admit the next call, in one
-- round trip (Breaker.record_and_admit; docs/design.md, "Around each request").
-- The admission runs after the record in the same script, so it sees every
-- transition the record made and the latest pause: it decides exactly as a
-- separate admit sent after the record would.
-- KEYS: record's keys (ARGV[3] of them), then admit's keys (same hash tag).
-- ARGV: 1 now override, 2 policy JSON, 3 number of record keys, 4..13 record's
--       args (record.lua), 14 the admission's token.
-- Returns {record's reply, admit's reply}.
local now = now_s()
local P = cjson.decode(ARGV[2])
local n = tonumber(ARGV[3])
local record_keys, admit_keys = {}, {}
for i = 1, #KEYS do
  if i <= n then
    record_keys[#record_keys + 1] = KEYS[i]
  else
    admit_keys[#admit_keys + 1] = KEYS[i]
  end
end
local recorded = record(now, P, record_keys, {unpack(ARGV, 4, 13)})
return {recorded, admit(now, P, admit_keys, ARGV[14])}
