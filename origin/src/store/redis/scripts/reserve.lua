#!lua
-- Reserve one unit each for a batch of members of one item and queue their
-- orders, atomically: the whole buy decision in one round trip. Each member
-- is decided as if alone, in arrival order (docs/DESIGN.md, "The reserve
-- script", says why it is shaped this way).
--
-- KEYS[1] item hash, KEYS[2] members hash, KEYS[3] order stream,
-- KEYS[4] this call's reply key ({p<id>}:reply:<call id>)
-- ARGV[1] product id, ARGV[2] how long (ms) the reply is kept, ARGV[3..]
-- member ids
-- Returns {'unknown_product' | 'unchecked' | 'not_started' | 'ended'} for
-- the whole batch, or {'each', r1, r2, ...}: 'q:<seq>:<stock left>' (queued), 'a'
-- (already holds a reservation or order), 'x' (sold out).
--
-- A call can arrive twice (a client resends a request after an I/O error,
-- not knowing whether it ran). A call that reserved anything keeps its
-- reply under its own id for a while, and the same call arriving again
-- answers that reply instead of deciding again, so a buyer is told of
-- their own reservation, never refused as already holding one.
local item = KEYS[1]
local members = KEYS[2]
local orders = KEYS[3]
local reply_key = KEYS[4]

local replayed = redis.call('GET', reply_key)
if replayed then
  local results = {}
  for part in string.gmatch(replayed, '[^,]+') do
    results[#results + 1] = part
  end
  return results
end

local fields = redis.call('HMGET', item, 'stock', 'starts_at', 'ends_at', 'price', 'seq', 'node')
if not fields[1] then
  return {'unknown_product'}
end
-- On a cluster, the node that last checked the item against the database.
-- Another node holding it now means the shard changed hands: a replica
-- promoted may lack the last writes (reservations whose orders are already
-- in the database, with the numbers this counter would hand out again), so
-- nothing is sold until the origin has checked it again (preheat.lua).
if fields[6] and redis.call('CLUSTER', 'MYID') ~= fields[6] then
  return {'unchecked'}
end

local clock = redis.call('TIME')
local now_s = tonumber(clock[1])
if now_s < tonumber(fields[2]) then
  return {'not_started'}
end
if now_s >= tonumber(fields[3]) then
  return {'ended'}
end
local reserved_at_ms = string.format('%d', now_s * 1000 + math.floor(tonumber(clock[2]) / 1000))

local held = redis.call('HMGET', members, unpack(ARGV, 3))
local stock = tonumber(fields[1])
local seq = tonumber(fields[5]) or 0
local results = {'each'}
local granted = {}
local winners = {}
for i = 3, #ARGV do
  local member = ARGV[i]
  local state = held[i - 2]
  local kind = state and string.sub(state, 1, 1)
  if granted[member] or kind == 'q' or kind == 's' then
    results[i - 1] = 'a'
  elseif stock <= 0 then
    results[i - 1] = 'x'
  else
    stock = stock - 1
    seq = seq + 1
    granted[member] = true
    winners[#winners + 1] = {member, seq}
    results[i - 1] = string.format('q:%d:%d', seq, stock)
  end
end
if #winners == 0 then
  return results
end

local function queue(winner)
  redis.call('XADD', orders, '*',
    'member', winner[1], 'product', ARGV[1], 'seq', string.format('%d', winner[2]),
    'price', fields[4], 'reserved_at_ms', reserved_at_ms)
end
queue(winners[1])
-- Written as integers: Lua's own number format turns large ones into
-- exponents that HINCRBY and the origin cannot read back.
redis.call('HSET', item, 'stock', string.format('%d', stock), 'seq', string.format('%d', seq))
for w = 2, #winners do
  queue(winners[w])
end
local states = {}
for w = 1, #winners do
  states[#states + 1] = winners[w][1]
  states[#states + 1] = string.format('q:%d', winners[w][2])
end
redis.call('HSET', members, unpack(states))
redis.call('SET', reply_key, table.concat(results, ','), 'PX', ARGV[2])
return results
