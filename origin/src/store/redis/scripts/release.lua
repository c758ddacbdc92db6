#!lua
-- Give one reservation's stock back, at most once ever, and move its member
-- to a state that lets them buy again. The one mechanism behind both a
-- dead-lettered order request and a cancelled order.
--
-- KEYS[1] item hash, KEYS[2] members hash, KEYS[3] returned-stock set,
-- KEYS[4] order stream, KEYS[5] dead-letter stream
-- ARGV[1] reservation number, ARGV[2] member,
-- ARGV[3] the member's new state (f:<seq> after a failure, c:<order> after
--         a cancellation),
-- ARGV[4] a state besides q:<seq> that this release supersedes ('' none;
--         s:<order> for a cancellation),
-- ARGV[5] consumer group, ARGV[6] stream entry to acknowledge ('' none),
-- ARGV[7] dead-letter reason ('' for none), ARGV[8..] dead-letter fields
--         as name/value pairs.
--
-- The returned-stock set makes the stock return idempotent: a second
-- release of the same reservation (a retried cancellation, a redelivered
-- dead letter) changes nothing. If the item is not in Redis at all (Redis
-- lost its data) no stock is touched: the item is reloaded from the
-- database, which already counts this reservation as unsold (a caller
-- that cannot be sure the reload read the database after its change
-- reloads and releases again).
-- Returns {1 if stock was returned now else 0, stock after, 1 if the item
-- is live else 0}.
local returned = 0
local stock = 0
local live = redis.call('EXISTS', KEYS[1]) == 1
if live then
  returned = redis.call('SADD', KEYS[3], ARGV[1])
  if returned == 1 then
    stock = redis.call('HINCRBY', KEYS[1], 'stock', 1)
  else
    stock = tonumber(redis.call('HGET', KEYS[1], 'stock'))
  end
end

local current = redis.call('HGET', KEYS[2], ARGV[2])
if current == 'q:' .. ARGV[1] or (ARGV[4] ~= '' and current == ARGV[4]) then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end

if ARGV[7] ~= '' then
  local fields = {'reason', ARGV[7]}
  for i = 8, #ARGV do
    fields[#fields + 1] = ARGV[i]
  end
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', '100000', '*', unpack(fields))
end
if ARGV[6] ~= '' then
  redis.call('XACK', KEYS[4], ARGV[5], ARGV[6])
end
return {returned, stock, live and 1 or 0}
