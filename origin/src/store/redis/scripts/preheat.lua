#!lua
-- Make one item live in Redis from its database row, bring a live one in
-- line with the database, or refresh the description of a live one.
--
-- KEYS[1] item hash, KEYS[2] members hash, KEYS[3] order stream,
-- KEYS[4] returned-stock set, KEYS[5] dead-letter stream
-- ARGV[1] mode 'keep' | 'replace' | 'describe', ARGV[2] the row's
-- revision, ARGV[3] stock, ARGV[4] starts_at, ARGV[5] ends_at, ARGV[6]
-- flash price, ARGV[7] total, ARGV[8] the first reservation number a
-- (re)loaded item may hand out after the database's highest, ARGV[9]
-- consumer group, ARGV[10] number N of live orders, ARGV[11] the
-- database's highest reservation number, then N triples (member, order,
-- reservation number) of live orders, then triples (reservation number,
-- member, cancelled order or 0 for a rejected reservation) of the
-- reservations whose unit already went back.
--
-- 'keep' (start-up, recovery, a shard that changed hands): an item that is
-- not live is loaded in full, atomically, so two origins starting at once
-- load it once. A live item keeps its stock, members and reservation
-- numbers (they run ahead of the database while orders are queued), except
-- where the database knows more than Redis does, which happens when Redis
-- went back to older data (a replica that had not received the last writes
-- was promoted; a restart that lost the last second of its log):
-- - a live order whose member Redis does not show holding it (neither
--   queued for that reservation nor holding that order, nor its unit back
--   from a cancellation made since the database was read) was never
--   counted by this Redis: its unit is taken from the stock and its member
--   shown holding it;
-- - a returned reservation missing from the returned set is settled as a
--   release would (once, guarded by the set): its unit comes back if this
--   Redis counted it (its member still queued for it or holding its
--   order), and its member shows the cancellation or failure;
-- - if the database holds a reservation number above Redis' counter, or a
--   live order Redis did not count, numbers handed out from the older data
--   may already be in the database or in a consumer's hands: the counter
--   moves past every number the database holds by the reload's gap.
-- 'replace' (a sale just created): anything under its id is left from a
-- creation that was rolled back and is wiped first. 'describe' (a
-- catalogue edit): only a live item's description is refreshed. A
-- description is only ever replaced by one of the same or a newer
-- revision: a row read before an edit never undoes it.
--
-- On a cluster the item records the node that loaded or checked it
-- (`node`, its cluster id): the reserve script refuses to sell an item
-- recorded by another node until it is checked again (see reserve.lua).
-- Returns {1 loaded | 0 already live | -1 not live (describe: nothing
-- done), orders taken into account, reservations settled, 1 if the
-- counter moved else 0}.
local mode = ARGV[1]
local live = redis.call('EXISTS', KEYS[1]) == 1
if mode == 'describe' and not live then
  return {-1, 0, 0, 0}
end
if mode == 'replace' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  live = false
end
-- The group may already exist (BUSYGROUP): that is fine.
redis.pcall('XGROUP', 'CREATE', KEYS[3], ARGV[9], '0', 'MKSTREAM')

local node = redis.pcall('CLUSTER', 'MYID')
if type(node) ~= 'string' then
  node = nil -- one Redis, not a cluster
end
local live_orders = tonumber(ARGV[10])
local first_order = 12
local first_returned = first_order + 3 * live_orders

if live then
  local known = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
  if tonumber(ARGV[2]) >= known then
    redis.call('HSET', KEYS[1], 'revision', ARGV[2], 'starts_at', ARGV[4],
      'ends_at', ARGV[5], 'price', ARGV[6], 'total', ARGV[7])
  end
  if mode == 'describe' then
    return {0, 0, 0, 0}
  end
  local stock_change, counted, settled = 0, 0, 0
  for i = first_order, first_returned - 1, 3 do
    local member, order, seq = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local state = redis.call('HGET', KEYS[2], member)
    -- Cancelled since the database was read: counted, and already back.
    local cancelled = state == 'c:' .. order or redis.call('SISMEMBER', KEYS[4], seq) == 1
    if state ~= 's:' .. order and state ~= 'q:' .. seq and not cancelled then
      stock_change = stock_change - 1
      counted = counted + 1
      redis.call('HSET', KEYS[2], member, 's:' .. order)
    end
  end
  for i = first_returned, #ARGV, 3 do
    local seq, member, order = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if redis.call('SADD', KEYS[4], seq) == 1 then
      settled = settled + 1
      local state = redis.call('HGET', KEYS[2], member)
      local taken_here = state == 'q:' .. seq or (order ~= '0' and state == 's:' .. order)
      if taken_here then
        stock_change = stock_change + 1
      end
      if taken_here or not state then
        local ended = order ~= '0' and ('c:' .. order) or ('f:' .. seq)
        redis.call('HSET', KEYS[2], member, ended)
      end
    end
  end
  local moved = 0
  local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
  local database_max = tonumber(ARGV[11])
  if database_max > seq or counted > 0 then
    local gap = tonumber(ARGV[8]) - database_max
    redis.call('HSET', KEYS[1], 'seq', string.format('%d', math.max(seq, database_max) + gap))
    moved = 1
  end
  if stock_change ~= 0 then
    redis.call('HINCRBY', KEYS[1], 'stock', stock_change)
  end
  if node then
    redis.call('HSET', KEYS[1], 'node', node)
  end
  return {0, counted, settled, moved}
end

redis.call('HSET', KEYS[1], 'revision', ARGV[2], 'stock', ARGV[3], 'starts_at', ARGV[4],
  'ends_at', ARGV[5], 'price', ARGV[6], 'total', ARGV[7], 'seq', ARGV[8])
if node then
  redis.call('HSET', KEYS[1], 'node', node)
end
for i = first_order, first_returned - 1, 3 do
  redis.call('HSET', KEYS[2], ARGV[i], 's:' .. ARGV[i + 1])
end
for i = first_returned, #ARGV, 3 do
  redis.call('SADD', KEYS[4], ARGV[i])
end
return {1, 0, 0, 0}
