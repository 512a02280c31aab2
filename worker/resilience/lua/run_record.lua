-- Entry of Breaker.record: one outcome (see record.lua).
-- KEYS: record's keys. ARGV: 1 now override, 2 policy JSON, 3.. record's args.
return record(now_s(), cjson.decode(ARGV[2]), KEYS, {unpack(ARGV, 3, 12)})
