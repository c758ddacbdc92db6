#!lua
-- Take or keep a lease: the holder renews it, anyone takes it when free.
-- KEYS[1] lease key; ARGV[1] holder token, ARGV[2] lease (ms)
-- Returns 1 when ARGV[1] holds the lease after the call.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
