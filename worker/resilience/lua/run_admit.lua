-- Entry of Breaker.admit: one admission (see admit.lua).
-- KEYS: admit's keys. ARGV: 1 now override, 2 policy JSON, 3 probe token.
return admit(now_s(), cjson.decode(ARGV[2]), KEYS, ARGV[3])
