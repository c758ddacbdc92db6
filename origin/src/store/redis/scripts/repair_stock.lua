#!lua
-- Set an item's live stock back to the database's figure, only if nothing
-- moved since the figures were read.
--
-- KEYS[1] item hash, KEYS[2] order stream
-- ARGV[1] consumer group, ARGV[2] expected stock, ARGV[3] expected
-- reservation number, ARGV[4] expected last delivered stream id,
-- ARGV[5] new stock, ARGV[6] lowest acceptable reservation number
--
-- "Nothing moved": stock and reservation number as read (no buy, release
-- or edit since), the group has delivered nothing since (no order write
-- could have started) and every entry is delivered and acknowledged (no
-- reservation is on its way to the database). Only then do the database's
-- figure and Redis' describe the same moment, and the repair cannot
-- create or destroy a sale.
-- Returns 1 when repaired, 0 when something moved (try again later).
local function field(list, name)
  for i = 1, #list, 2 do
    if list[i] == name then
      return list[i + 1]
    end
  end
end

local item = redis.call('HMGET', KEYS[1], 'stock', 'seq', 'node')
if item[1] ~= ARGV[2] or (item[2] or '0') ~= ARGV[3] then
  return 0
end
-- Last checked by another cluster node: the shard changed hands, and the
-- check (preheat.lua) rebuilds what it lacks, member states included;
-- setting the stock alone now would count those orders twice.
if item[3] and redis.call('CLUSTER', 'MYID') ~= item[3] then
  return 0
end
local delivered = nil
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[2])) do
  if field(group, 'name') == ARGV[1] then
    delivered = field(group, 'last-delivered-id')
  end
end
local generated = field(redis.call('XINFO', 'STREAM', KEYS[2]), 'last-generated-id')
local pending = redis.call('XPENDING', KEYS[2], ARGV[1])[1]
if delivered ~= ARGV[4] or generated ~= delivered or pending ~= 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'stock', ARGV[5])
if tonumber(ARGV[6]) > tonumber(item[2] or '0') then
  redis.call('HSET', KEYS[1], 'seq', ARGV[6])
end
return 1
