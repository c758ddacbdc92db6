#!lua
-- Claim due payment deadlines for one poller, with a lease.
--
-- KEYS[1] deadline sorted set (member <product>:<order>, score deadline ms)
-- ARGV[1] lease (ms), ARGV[2] most entries to claim
--
-- "Due" is judged on Redis' clock, one clock for every poller, whatever
-- their own clocks say. A claimed entry is not removed: its score moves to
-- now + lease, so no other poller sees it as due while this one works on
-- it, and if this poller dies the entry becomes due again when the lease
-- runs out and is retried by another. The poller removes it when the order
-- is settled.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local until_ms = now + tonumber(ARGV[1])
for _, entry in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', string.format('%d', until_ms), entry)
end
return due
