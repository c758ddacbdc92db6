#!lua
-- After a batch of orders is committed to the database: record each
-- member's result and acknowledge the stream entries, atomically.
--
-- KEYS[1] members hash, KEYS[2] order stream
-- ARGV[1] consumer group, then groups of four:
--   (stream entry id, member, reservation number, order id)
--
-- A member moves from q:<seq> to s:<order> only if they still hold that
-- very reservation: a redelivered message never overwrites a later state
-- (a cancelled order, a new reservation after one).
-- Returns how many entries were acknowledged.
local ids = {}
for i = 2, #ARGV, 4 do
  local entry, member, seq, order = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if member ~= '' and redis.call('HGET', KEYS[1], member) == 'q:' .. seq then
    redis.call('HSET', KEYS[1], member, 's:' .. order)
  end
  ids[#ids + 1] = entry
end
if #ids == 0 then
  return 0
end
return redis.call('XACK', KEYS[2], ARGV[1], unpack(ids))
