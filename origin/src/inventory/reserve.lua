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
-- The cost of a batch is what makes the buy path fast, so the script reads
-- every member's state with one HMGET, decides in Lua, and writes the item's
-- stock and sequence once and every winner's state with one HSET; only the
-- order requests are one XADD each. The duplicate check runs before any
-- unit is counted (no undersell), a member twice in one batch wins at most
-- once, and the stock never goes below zero.
--
-- Order of writes: the first XADD comes before anything else changes, so
-- the failures a write can meet here (the stream key holding another type)
-- leave no trace. Out of memory is refused before the script starts (the
-- `#!lua` line makes Redis check it up front, instead of failing halfway).
-- Anything failing later still can't oversell: stock is taken for every
-- winner before their states are written.
local item = KEYS[1]
local members = KEYS[2]
local orders = KEYS[3]

local fields = redis.call('HMGET', item, 'stock', 'starts_at', 'ends_at', 'price', 'seq')
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

local held = redis.call('HMGET', members, unpack(ARGV, 2))
local stock = tonumber(fields[1])
local seq = tonumber(fields[5]) or 0
local results = {'each'}
local granted = {}
local winners = {}
for i = 2, #ARGV do
  local member = ARGV[i]
  local state = held[i - 1]
  local kind = state and string.sub(state, 1, 1)
  if granted[member] or kind == 'q' or kind == 's' then
    results[i] = 'a'
  elseif stock <= 0 then
    results[i] = 'x'
  else
    stock = stock - 1
    seq = seq + 1
    granted[member] = true
    winners[#winners + 1] = {member, seq}
    results[i] = 'q:' .. seq .. ':' .. stock
  end
end
if #winners == 0 then
  return results
end

local function queue(winner)
  redis.call('XADD', orders, '*',
    'member', winner[1], 'product', ARGV[1], 'seq', winner[2],
    'price', fields[4], 'reserved_at_ms', reserved_at_ms)
end
queue(winners[1])
redis.call('HSET', item, 'stock', stock, 'seq', seq)
for w = 2, #winners do
  queue(winners[w])
end
local states = {}
for w = 1, #winners do
  states[#states + 1] = winners[w][1]
  states[#states + 1] = 'q:' .. winners[w][2]
end
redis.call('HSET', members, unpack(states))
return results
