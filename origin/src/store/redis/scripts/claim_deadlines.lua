#!lua
-- Claim due payment deadlines for one poller, with a lease.
--
-- KEYS[1] deadline sorted set (member <product>:<order>, score deadline ms)
-- ARGV[1] now (unix ms), ARGV[2] lease (ms), ARGV[3] most entries to claim
--
-- A claimed entry is not removed: its score moves to now + lease, so no
-- other poller sees it as due while this one works on it, and if this
-- poller dies the entry becomes due again when the lease runs out and is
-- retried by another. The poller removes it when the order is settled.
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local until_ms = now + tonumber(ARGV[2])
for _, entry in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', until_ms, entry)
end
return due
