#!lua
-- Reserve one unit each for a batch of members of one flash item and queue
-- their orders: the whole buy decision, atomically, in one round trip. A
-- batch is the buys for the item that were waiting at the same moment (one
-- member when the origin is not busy); each member is decided exactly as
-- if alone, in arrival order.
--
-- KEYS[1] item hash {p}:item     stock, starts_at, ends_at, price, seq
-- KEYS[2] members hash {p}:members  member -> q:<seq> | s:<order> | f:<seq> | c:<order>
-- KEYS[3] order stream {p}:orders
-- ARGV[1] product id, ARGV[2..] member ids
--
-- Returns {'unknown_product' | 'not_started' | 'ended'} for the whole batch,
-- or {'each', r1, r2, ...}, one entry per member: 'q:<seq>:<stock left>'
-- (reserved and queued), 'a' (already holds a reservation or order), 'x'
-- (sold out).
--
-- The duplicate check runs before the decrement (no undersell), the stock
-- never goes below zero, and each member's order request is in the stream
-- before their stock and state change: if XADD fails (wrong type, out of
-- memory) nothing of that member changes but an unused reservation number.
-- The `#!lua` line makes Redis refuse the script up front when it is out of
-- memory, instead of failing halfway.
local item = KEYS[1]
local members = KEYS[2]
local orders = KEYS[3]

local fields = redis.call('HMGET', item, 'stock', 'starts_at', 'ends_at', 'price')
if not fields[1] then
  return {'unknown_product'}
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

local stock = tonumber(fields[1])
local results = {'each'}
for i = 2, #ARGV do
  local member = ARGV[i]
  local held = redis.call('HGET', members, member)
  local kind = held and string.sub(held, 1, 1)
  if kind == 'q' or kind == 's' then
    results[#results + 1] = 'a'
  elseif stock <= 0 then
    results[#results + 1] = 'x'
  else
    local seq = redis.call('HINCRBY', item, 'seq', 1)
    redis.call('XADD', orders, '*',
      'member', member, 'product', ARGV[1], 'seq', seq,
      'price', fields[4], 'reserved_at_ms', reserved_at_ms)
    stock = redis.call('HINCRBY', item, 'stock', -1)
    redis.call('HSET', members, member, 'q:' .. seq)
    results[#results + 1] = 'q:' .. seq .. ':' .. stock
  end
end
return results
