#!lua
-- Reserve one unit of a flash item for one member and queue the order: the
-- whole buy decision in one atomic step, one round trip.
--
-- KEYS[1] item hash {p}:item     stock, starts_at, ends_at, price, seq
-- KEYS[2] members hash {p}:members  member -> q:<seq> | s:<order> | f:<seq> | c:<order>
-- KEYS[3] order stream {p}:orders
-- ARGV[1] member id, ARGV[2] product id
--
-- Returns {'queued', stock_left, seq} or {'<refusal>'}. The duplicate check
-- runs before the decrement, the stock never goes below zero, and the order
-- request is in the stream before anything else changes: if XADD fails
-- (wrong type, out of memory), nothing but the unused reservation number is
-- touched. The `#!lua` line makes Redis refuse the whole script up front
-- when it is out of memory, instead of failing halfway.
local item = KEYS[1]
local members = KEYS[2]
local orders = KEYS[3]
local member = ARGV[1]

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

local held = redis.call('HGET', members, member)
if held then
  local kind = string.sub(held, 1, 1)
  if kind == 'q' or kind == 's' then
    return {'already_ordered'}
  end
end

if tonumber(fields[1]) <= 0 then
  return {'sold_out'}
end

local seq = redis.call('HINCRBY', item, 'seq', 1)
local reserved_at_ms = now_s * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('XADD', orders, '*',
  'member', member, 'product', ARGV[2], 'seq', seq,
  'price', fields[4], 'reserved_at_ms', string.format('%d', reserved_at_ms))
local left = redis.call('HINCRBY', item, 'stock', -1)
redis.call('HSET', members, member, 'q:' .. seq)
return {'queued', left, seq}
