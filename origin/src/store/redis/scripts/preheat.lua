#!lua
-- Make one item live in Redis from its database row, or refresh the
-- description of a live one.
--
-- KEYS[1] item hash, KEYS[2] members hash, KEYS[3] order stream,
-- KEYS[4] returned-stock set, KEYS[5] dead-letter stream
-- ARGV[1] mode 'keep' | 'replace' | 'describe', ARGV[2] the row's
-- revision, ARGV[3] stock, ARGV[4] starts_at, ARGV[5] ends_at, ARGV[6]
-- flash price, ARGV[7] total, ARGV[8] last reservation number used,
-- ARGV[9] consumer group, ARGV[10] number N of member pairs, then N pairs
-- (member, state) of members holding a live order, then the reservation
-- numbers whose unit already went back.
--
-- 'keep' (start-up, recovery): a live item keeps its stock, members and
-- reservation numbers (they run ahead of the database while orders are
-- queued); an item that is not live is loaded in full, atomically, so two
-- origins starting at once load it once. 'replace' (a sale just created):
-- anything under its id is left from a creation that was rolled back and
-- is wiped first. 'describe' (a catalogue edit): only a live item's
-- description is refreshed. A description is only ever replaced by one of
-- the same or a newer revision: a row read before an edit never undoes it.
-- Returns 1 loaded, 0 already live, -1 not live (describe: nothing done).
local mode = ARGV[1]
local live = redis.call('EXISTS', KEYS[1]) == 1
if mode == 'describe' and not live then
  return -1
end
if mode == 'replace' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  live = false
end
-- The group may already exist (BUSYGROUP): that is fine.
redis.pcall('XGROUP', 'CREATE', KEYS[3], ARGV[9], '0', 'MKSTREAM')

if live then
  local known = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
  if tonumber(ARGV[2]) >= known then
    redis.call('HSET', KEYS[1], 'revision', ARGV[2], 'starts_at', ARGV[4],
      'ends_at', ARGV[5], 'price', ARGV[6], 'total', ARGV[7])
  end
  return 0
end

redis.call('HSET', KEYS[1], 'revision', ARGV[2], 'stock', ARGV[3], 'starts_at', ARGV[4],
  'ends_at', ARGV[5], 'price', ARGV[6], 'total', ARGV[7], 'seq', ARGV[8])
local last_pair = 10 + 2 * tonumber(ARGV[10])
for i = 11, last_pair, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
for i = last_pair + 1, #ARGV do
  redis.call('SADD', KEYS[4], ARGV[i])
end
return 1
