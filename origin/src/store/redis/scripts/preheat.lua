#!lua
-- Make one flash item live in Redis from its database row.
--
-- KEYS[1] item hash, KEYS[2] members hash, KEYS[3] order stream,
-- KEYS[4] returned-stock set, KEYS[5] dead-letter stream
-- ARGV[1] stock, ARGV[2] starts_at, ARGV[3] ends_at, ARGV[4] flash price,
-- ARGV[5] total, ARGV[6] last reservation number used, ARGV[7] consumer
-- group, ARGV[8] 'keep' | 'replace' | 'describe', then pairs of (member, state) for
-- members holding a live order.
--
-- 'keep' (start-up, recovery): if the item already exists its stock,
-- members and reservation numbers are Redis' (they run ahead of the
-- database while orders are queued) and only the sale's description is
-- refreshed; otherwise everything is loaded. Atomic, so two origins starting
-- at once load it once.
-- 'replace' (a sale just created): whatever Redis holds under this id is
-- left over from a creation that was rolled back, and is wiped first.
--
-- 'describe' (a catalogue edit): refresh the description of a live item
-- only; an item that is not live is left alone (returns -1) so the caller
-- loads it in full.
--
-- Returns 1 when the item was loaded, 0 when it was already live.
if ARGV[8] == 'describe' and redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
if ARGV[8] == 'replace' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
end

local loaded = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'starts_at', ARGV[2], 'ends_at', ARGV[3], 'price', ARGV[4], 'total', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'stock', ARGV[1], 'starts_at', ARGV[2], 'ends_at', ARGV[3],
    'price', ARGV[4], 'total', ARGV[5], 'seq', ARGV[6])
  for i = 9, #ARGV, 2 do
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
  loaded = 1
end
-- The group may already exist (BUSYGROUP): that is fine.
redis.pcall('XGROUP', 'CREATE', KEYS[3], ARGV[7], '0', 'MKSTREAM')
return loaded
