#!lua
-- Record that a product sold out (ARGV[2] = '1') or is back in stock ('0'),
-- and tell every origin node. Idempotent: only a real change bumps the
-- version and publishes, so every node that notices the same sell-out may
-- call it.
--
-- KEYS[1] sold-out set, KEYS[2] version counter
-- ARGV[1] product id, ARGV[2] '1' | '0', ARGV[3] pub/sub channel
--
-- Message: '+<product>:<version>' (sold out) or '-<product>:<version>'.
-- Returns the new version, or 0 when nothing changed.
local changed
if ARGV[2] == '1' then
  changed = redis.call('SADD', KEYS[1], ARGV[1])
else
  changed = redis.call('SREM', KEYS[1], ARGV[1])
end
if changed == 0 then
  return 0
end
local version = redis.call('INCR', KEYS[2])
local sign = '-'
if ARGV[2] == '1' then
  sign = '+'
end
redis.call('PUBLISH', ARGV[3], sign .. ARGV[1] .. ':' .. version)
return version
