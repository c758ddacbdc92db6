#!lua
-- After a batch of orders is committed to the database: record each
-- member's result and acknowledge the stream entries, atomically.
--
-- KEYS[1] members hash, KEYS[2] order stream, KEYS[3] item hash
-- ARGV[1] consumer group, then groups of five:
--   (stream entry id, member, reservation number, order id, 1 if the order
--   was inserted by this very write else 0)
--
-- A member moves from q:<seq> to s:<order> only if they still hold that
-- very reservation: a redelivered message never overwrites a later state
-- (a cancelled order, a new reservation after one).
-- An order just inserted whose member has no state at all was never
-- counted by this Redis: its reservation was made on data this Redis no
-- longer has (a replica promoted without the last writes, or Redis
-- reloaded from the database before the order was committed). Its unit
-- is taken from the live stock and its member shown holding it, as the
-- check of a rebuilt item does (preheat.lua).
-- Returns how many entries were acknowledged.
local live = redis.call('EXISTS', KEYS[3]) == 1
local ids = {}
for i = 2, #ARGV, 5 do
  local entry, member, seq, order, inserted = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if member ~= '' then
    local state = redis.call('HGET', KEYS[1], member)
    if state == 'q:' .. seq then
      redis.call('HSET', KEYS[1], member, 's:' .. order)
    elseif not state and inserted == '1' and live then
      redis.call('HSET', KEYS[1], member, 's:' .. order)
      redis.call('HINCRBY', KEYS[3], 'stock', -1)
    end
  end
  ids[#ids + 1] = entry
end
if #ids == 0 then
  return 0
end
return redis.call('XACK', KEYS[2], ARGV[1], unpack(ids))
