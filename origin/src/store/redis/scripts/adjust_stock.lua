#!lua
-- Apply one stock edit (an operator changed stock_total) to live stock,
-- at most once.
--
-- KEYS[1] item hash, KEYS[2] stock-changes hash (change id -> units moved)
-- ARGV[1] change id, ARGV[2] delta (new total - old total)
--
-- Adding units makes them sellable at once, up to 2^53 - 1 in all (the
-- largest integer Lua numbers carry exactly). Removing units takes only
-- unsold ones: live stock never goes below zero, so what is already
-- reserved stays reserved.
-- Returns {units moved, stock after, state}: state 1 applied now, 0 applied
-- before (units moved then), -1 item not live in Redis (nothing done).
local before = redis.call('HGET', KEYS[2], ARGV[1])
if before then
  return {tonumber(before), tonumber(redis.call('HGET', KEYS[1], 'stock') or '0'), 0}
end
local stock = redis.call('HGET', KEYS[1], 'stock')
if not stock then
  return {0, 0, -1}
end
stock = tonumber(stock)
local delta = tonumber(ARGV[2])
local moved = delta
if delta < 0 and -delta > stock then
  -- 0 - stock, not -stock: negating 0 gives -0, which reaches Redis as
  -- "-0", and HINCRBY refuses that as not an integer.
  moved = 0 - stock
end
local max = 9007199254740991
if delta > 0 and delta > max - stock then
  moved = max - stock
end
if moved ~= 0 then
  stock = redis.call('HINCRBY', KEYS[1], 'stock', moved)
end
redis.call('HSET', KEYS[2], ARGV[1], moved)
return {moved, stock, 1}
