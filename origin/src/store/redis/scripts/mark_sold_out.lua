#!lua
-- Record that a product sold out (ARGV[2] = '1') or is back in stock ('0'),
-- and tell every origin node.
--
-- KEYS[1] the group's sold-out set, KEYS[2] its version counter,
-- KEYS[3] its channel (a shard channel on a cluster, so it is declared
-- like a key and lives in the group's slot)
-- ARGV[1] product id, ARGV[2] '1' | '0', ARGV[3] 'PUBLISH' on one Redis,
-- 'SPUBLISH' on a cluster
--
-- The version changes exactly when the set changes. A sell-out is only
-- announced when it is news (every node that notices it may call this). A
-- return to stock is always announced: a node may hold a flag it learnt
-- from its own reserve answer even if the set never had the product, and
-- a stale flag is what turns buyers away.
--
-- Message: '+<product>:<version>' (sold out) or '-<product>:<version>'.
-- Returns the version after the call.
local changed
if ARGV[2] == '1' then
  changed = redis.call('SADD', KEYS[1], ARGV[1])
else
  changed = redis.call('SREM', KEYS[1], ARGV[1])
end
local version
if changed == 1 then
  version = redis.call('INCR', KEYS[2])
else
  version = tonumber(redis.call('GET', KEYS[2]) or '0')
end
if ARGV[2] == '1' then
  if changed == 1 then
    redis.call(ARGV[3], KEYS[3], '+' .. ARGV[1] .. ':' .. version)
  end
else
  redis.call(ARGV[3], KEYS[3], '-' .. ARGV[1] .. ':' .. version)
end
return version
