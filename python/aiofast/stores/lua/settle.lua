-- Settle one admission: release what it holds and charge what it really used.
--
-- Idempotent without any marker: every part first removes the request's own hold (token
-- hold, concurrency slot, budget hold) and acts only if it was still there, so a second
-- settle changes nothing, and neither does a late one: a hold that expired was settled
-- at its reserved amount then. Spend is charged to the period Redis's clock is in when
-- the request settles.
--
-- ARGV: reservation id, number of parts, then per part its kind and fields. KEYS are
-- consumed in part order.
--
--   rate            KEYS meter, holds            ARGV interval_ms, reserved, used, mark
--   concurrency     KEYS holders                 ARGV (none)
--   budget          KEYS state, holds, spend of  ARGV reserved, used, start_ms, end_ms,
--                   previous/current/next period      retention_ms
--   rolling         KEYS state, holds            ARGV reserved, used, slot_ms
--   charge          KEYS spend                   ARGV used, ttl_ms (spend recorded
--                                                elsewhere, e.g. while Redis was away)
--   charge_rolling  KEYS state                   ARGV used, slot_ms, at_ms, ttl_ms
--
-- Reply: the number of holds this call released (0: already settled or expired).

-- Loaded after reservation_prelude.lua: now, id, count, arg(), num(), key(), int().

local released = 0

-- Gives the hold back; true if it was still there (not expired, not settled).
local function release_hold(state, holds, reserved)
  if redis.call('ZREM', holds, id .. ':' .. int(reserved)) == 1 then
    redis.call('HINCRBY', state, 'reserved', int(-reserved))
    released = released + 1
    return true
  end
  return false
end

local function charge(spend_key, field, used, ttl)
  redis.call('HINCRBY', spend_key, field, int(used))
  if redis.call('PTTL', spend_key) < 0 then
    redis.call('PEXPIRE', spend_key, math.max(ttl, 1))
  end
end

-- Unused reserved units go back, but never below what later admissions charged (the
-- meter's charge count past this reservation's mark): each of them arrived by now and
-- added its share. Extra units are charged, as they were already consumed upstream.
local function reconcile(meter, interval, reserved, used, mark)
  local state = redis.call('HMGET', meter, 't', 'c')
  local tat, charged = tonumber(state[1]), tonumber(state[2]) or 0
  local base = math.max(tat or now, now)
  local new_tat
  if used == reserved then
    return
  elseif used > reserved then
    new_tat = base + (used - reserved) * interval
  else
    local floor = now + math.max(charged - mark, 0)
    if tat == nil or tat <= floor then
      return
    end
    new_tat = math.max(tat - (reserved - used) * interval, floor)
  end
  charged = charged + math.max(new_tat - base, 0)
  if new_tat > now then
    redis.call('HSET', meter, 't', string.format('%.3f', new_tat),
      'c', string.format('%.3f', charged))
    redis.call('PEXPIRE', meter, math.ceil(new_tat - now) + 1)
  else
    redis.call('DEL', meter)
  end
end

for _ = 1, count do
  local kind = ARGV[argi]
  argi = argi + 1
  if kind == 'rate' then
    local meter, holds = key(), key()
    local interval, reserved, used, mark = num(), num(), num(), num()
    if redis.call('ZREM', holds, id) == 1 then
      released = released + 1
      reconcile(meter, interval, reserved, used, mark)
    end
  elseif kind == 'concurrency' then
    released = released + redis.call('ZREM', key(), id)
  elseif kind == 'budget' then
    local state, holds = key(), key()
    local spend = {key(), key(), key()}
    local reserved, used, start_ms, end_ms, retention = num(), num(), num(), num(), num()
    if release_hold(state, holds, reserved) then
      local period, ends = spend[2], end_ms
      if now < start_ms then
        period, ends = spend[1], start_ms
      elseif now >= end_ms then
        period, ends = spend[3], end_ms + (end_ms - start_ms)
      end
      charge(period, 'spent', used, ends - now + retention)
    end
  elseif kind == 'rolling' then
    local state, holds = key(), key()
    local reserved, used, slot_ms = num(), num(), num()
    if release_hold(state, holds, reserved) then
      redis.call('HINCRBY', state, 's' .. math.floor(now / slot_ms), int(used))
    end
  elseif kind == 'charge' then
    local spend_key = key()
    local used, ttl = num(), num()
    charge(spend_key, 'spent', used, ttl)
  elseif kind == 'charge_rolling' then
    local state = key()
    local used, slot_ms, at, ttl = num(), num(), num(), num()
    charge(state, 's' .. math.floor(at / slot_ms), used, ttl)
  else
    return redis.error_reply('aiofast settle: unknown part kind ' .. tostring(kind))
  end
end
return released
