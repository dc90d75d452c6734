-- Settle one admission: release what it holds and charge what it really used.
--
-- Idempotent: the first call sets the settle marker (KEYS[1]); any later call for
-- the same reservation changes nothing. A budget hold that already expired was
-- charged at its reserved amount then, so its late settle charges nothing more.
--
-- ARGV: reservation id, marker ttl in ms, number of parts, then per part its kind
-- and fields. KEYS after the marker are consumed in part order.
--
--   rate         KEYS tat            ARGV interval_ms, delta (used - reserved)
--   concurrency  KEYS holders        ARGV (none)
--   budget       KEYS totals, holds  ARGV reserved, used
--   rolling      KEYS totals, holds  ARGV reserved, used, bucket_ms
--   charge       KEYS totals         ARGV used, ttl_ms (spend recorded elsewhere, e.g.
--                                    locally while Redis was unreachable)
--   charge_rolling KEYS totals       ARGV used, ttl_ms, bucket_ms, at_ms
--
-- Reply: 1 when this call settled, 0 when the reservation was already settled.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local id = ARGV[1]
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', tonumber(ARGV[2])) then
  return 0
end

local count = tonumber(ARGV[3])
local argi = 4
local keyi = 2

local function arg()
  local value = ARGV[argi]
  argi = argi + 1
  return value
end

local function key()
  local value = KEYS[keyi]
  keyi = keyi + 1
  return value
end

local function int(value)
  return string.format('%d', value)
end

-- Releases the hold and charges `used` to `field`, unless the hold already expired.
local function release_hold(totals, holds, reserved, used, field)
  if redis.call('ZREM', holds, id .. ':' .. int(reserved)) == 1 then
    redis.call('HINCRBY', totals, 'reserved', -reserved)
    redis.call('HINCRBY', totals, field, int(used))
  end
end

for _ = 1, count do
  local kind = arg()
  if kind == 'rate' then
    local tat_key = key()
    local interval = tonumber(arg())
    local delta = tonumber(arg())
    local tat = tonumber(redis.call('GET', tat_key))
    -- A refund (delta < 0) gives back unused reserved tokens, never more than the
    -- bucket holds; an overrun charges from now on, like a new admission would.
    local new_tat = nil
    if delta < 0 and tat ~= nil then
      new_tat = math.max(tat + delta * interval, now)
    elseif delta > 0 then
      new_tat = math.max(tat or now, now) + delta * interval
    end
    if new_tat ~= nil then
      if new_tat > now then
        redis.call('SET', tat_key, string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
      else
        redis.call('DEL', tat_key)
      end
    end
  elseif kind == 'concurrency' then
    redis.call('ZREM', key(), id)
  elseif kind == 'budget' then
    local totals, holds = key(), key()
    local reserved, used = tonumber(arg()), tonumber(arg())
    release_hold(totals, holds, reserved, used, 'spent')
  elseif kind == 'rolling' then
    local totals, holds = key(), key()
    local reserved, used, bucket = tonumber(arg()), tonumber(arg()), tonumber(arg())
    release_hold(totals, holds, reserved, used, 'b' .. math.floor(now / bucket))
  elseif kind == 'charge' then
    local totals = key()
    local used, ttl = tonumber(arg()), tonumber(arg())
    redis.call('HINCRBY', totals, 'spent', int(used))
    if redis.call('PTTL', totals) < 0 then
      redis.call('PEXPIRE', totals, ttl)
    end
  elseif kind == 'charge_rolling' then
    local totals = key()
    local used, ttl, bucket, at = tonumber(arg()), tonumber(arg()), tonumber(arg()), tonumber(arg())
    redis.call('HINCRBY', totals, 'b' .. math.floor(at / bucket), int(used))
    if redis.call('PTTL', totals) < 0 then
      redis.call('PEXPIRE', totals, ttl)
    end
  else
    return redis.error_reply('aiofast settle: unknown part kind ' .. tostring(kind))
  end
end
return 1
