-- One admission: every limit of every scope, decided and reserved atomically.
--
-- The time comes from Redis (TIME), so gateways with drifting clocks agree.
-- Nothing is written unless every enforced check admits (all or nothing); a check
-- in shadow mode is decided and reported but never refuses.
--
-- ARGV: reservation id, number of checks, then per check its kind, its shadow flag
-- ('1' or '0') and the fields of its kind. KEYS are consumed in check order.
--
--   rate         KEYS tat                   ARGV interval_ms, burst, amount
--   concurrency  KEYS holders               ARGV max, lease_ms
--   budget       KEYS 3 x (totals, holds)   ARGV limit, amount, hold_ms, start_ms, end_ms,
--                (previous, current and         retention_ms
--                next calendar period)
--   rolling      KEYS totals, holds         ARGV limit, amount, hold_ms, window_ms, bucket_ms
--
-- Reply: space-separated integers: admitted (1/0), now_ms, then per check: admitted,
-- remaining, reset_ms, retry_ms (-1: waiting will not help) and the period index
-- (budget: 0 previous, 1 current, 2 next; otherwise 1).

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local id = ARGV[1]
local count = tonumber(ARGV[2])
local argi = 3
local keyi = 1

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

-- Reservations that were never settled (crashed handler, lost connection) are
-- charged at their reserved amount once they expire.
local function expire_holds(totals, holds, charge_field)
  local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', now, 'LIMIT', 0, 256)
  for _, member in ipairs(expired) do
    local amount = tonumber(string.match(member, ':(%d+)$'))
    redis.call('HINCRBY', totals, 'reserved', -amount)
    redis.call('HINCRBY', totals, charge_field, amount)
    redis.call('ZREM', holds, member)
  end
end

local function decide_rate(check)
  local tat = tonumber(redis.call('GET', check.key)) or now
  if tat < now then
    tat = now
  end
  local span = check.burst * check.interval
  local new_tat = tat + check.amount * check.interval
  local allow_at = new_tat - span
  check.before = math.min(math.floor((now + span - tat) / check.interval), check.burst)
  check.reset_before = tat - now
  if allow_at <= now then
    check.ok = true
    check.new_tat = new_tat
    check.remaining = math.floor((now - allow_at) / check.interval)
    check.reset = new_tat - now
    check.retry = 0
  else
    check.ok = false
    check.remaining = check.before
    check.reset = tat - now
    if check.amount > check.burst then
      check.retry = -1
    else
      check.retry = allow_at - now
    end
  end
end

local function decide_concurrency(check)
  redis.call('ZREMRANGEBYSCORE', check.key, '-inf', now)
  local held = redis.call('ZCARD', check.key)
  check.before = check.max - held
  check.ok = held < check.max
  check.remaining = check.max - held
  if check.ok then
    check.remaining = check.remaining - 1
  end
  check.reset = 0
  check.retry = -1
end

local function decide_budget(check)
  check.slot = 1
  if now < check.start_ms then
    check.slot = 0
  elseif now >= check.end_ms then
    check.slot = 2
  end
  check.totals = check.keys[check.slot * 2 + 1]
  check.holds = check.keys[check.slot * 2 + 2]
  expire_holds(check.totals, check.holds, 'spent')

  local spent = tonumber(redis.call('HGET', check.totals, 'spent')) or 0
  local reserved = tonumber(redis.call('HGET', check.totals, 'reserved')) or 0
  local left = check.limit - spent - reserved
  check.before = math.max(left, 0)
  check.ok = check.amount <= left
  check.remaining = check.ok and (left - check.amount) or check.before
  if check.slot == 1 then
    check.reset = check.end_ms - now
  elseif check.slot == 0 then
    check.reset = check.start_ms - now
  else
    check.reset = -1
  end
  check.retry = check.ok and 0 or -1
end

-- Rolling windows keep one spend counter per bucket (window / buckets wide); a
-- bucket counts in full until its whole width has left the window, so the sum
-- never under-counts what was spent in the window.
local function decide_rolling(check)
  local first_live = math.floor((now - check.window) / check.bucket) + 1
  expire_holds(check.totals, check.holds, 'b' .. math.floor(now / check.bucket))

  local fields = redis.call('HGETALL', check.totals)
  local reserved = 0
  local spent = 0
  local buckets = {}
  for i = 1, #fields, 2 do
    local name, value = fields[i], tonumber(fields[i + 1])
    if name == 'reserved' then
      reserved = value
    else
      local index = tonumber(string.sub(name, 2))
      if index < first_live then
        redis.call('HDEL', check.totals, name)
      else
        spent = spent + value
        buckets[#buckets + 1] = {index, value}
      end
    end
  end

  local left = check.limit - spent - reserved
  check.before = math.max(left, 0)
  check.ok = check.amount <= left
  check.remaining = check.ok and (left - check.amount) or check.before
  check.reset = 0
  check.retry = check.ok and 0 or -1
  if #buckets > 0 then
    table.sort(buckets, function(a, b) return a[1] < b[1] end)
    check.reset = (buckets[#buckets][1] + 1) * check.bucket + check.window - now
  end
  if not check.ok and check.amount <= check.limit - reserved then
    -- Wait until enough old buckets have left the window.
    local freed = left
    for _, bucket in ipairs(buckets) do
      freed = freed + bucket[2]
      if freed >= check.amount then
        check.retry = (bucket[1] + 1) * check.bucket + check.window - now
        break
      end
    end
  end
end

local function reserve_hold(check, ttl)
  redis.call('HINCRBY', check.totals, 'reserved', int(check.amount))
  redis.call('ZADD', check.holds, now + check.hold, id .. ':' .. int(check.amount))
  redis.call('PEXPIRE', check.totals, ttl)
  redis.call('PEXPIRE', check.holds, ttl)
end

local function commit(check)
  if check.kind == 'rate' then
    redis.call('SET', check.key, string.format('%.3f', check.new_tat),
      'PX', math.ceil(check.new_tat - now) + 1)
  elseif check.kind == 'concurrency' then
    redis.call('ZADD', check.key, now + check.lease, id)
    redis.call('PEXPIRE', check.key, check.lease)
  elseif check.kind == 'budget' then
    local period_end = check.end_ms
    if check.slot == 0 then
      period_end = check.start_ms
    end
    local ttl = math.max(period_end - now, check.hold) + check.retention
    reserve_hold(check, math.floor(ttl))
  else
    reserve_hold(check, check.window + check.hold)
  end
end

local checks = {}
for i = 1, count do
  local check = {kind = arg(), shadow = arg() == '1', slot = 1}
  if check.kind == 'rate' then
    check.key = key()
    check.interval = tonumber(arg())
    check.burst = tonumber(arg())
    check.amount = tonumber(arg())
    decide_rate(check)
  elseif check.kind == 'concurrency' then
    check.key = key()
    check.max = tonumber(arg())
    check.lease = tonumber(arg())
    decide_concurrency(check)
  elseif check.kind == 'budget' then
    check.keys = {key(), key(), key(), key(), key(), key()}
    check.limit = tonumber(arg())
    check.amount = tonumber(arg())
    check.hold = tonumber(arg())
    check.start_ms = tonumber(arg())
    check.end_ms = tonumber(arg())
    check.retention = tonumber(arg())
    decide_budget(check)
  elseif check.kind == 'rolling' then
    check.totals = key()
    check.holds = key()
    check.limit = tonumber(arg())
    check.amount = tonumber(arg())
    check.hold = tonumber(arg())
    check.window = tonumber(arg())
    check.bucket = tonumber(arg())
    decide_rolling(check)
  else
    return redis.error_reply('aiofast admit: unknown check kind ' .. tostring(check.kind))
  end
  checks[i] = check
end

local admitted = true
for _, check in ipairs(checks) do
  if not check.ok and not check.shadow then
    admitted = false
  end
end

for _, check in ipairs(checks) do
  if admitted and check.ok then
    commit(check)
  else
    -- Nothing was taken: report what is left without this request.
    check.remaining = check.before
    check.reset = check.reset_before or check.reset
  end
end

-- One bulk string instead of an array: a client parses it in one read, not one per field.
local reply = {admitted and '1' or '0', int(now)}
for _, check in ipairs(checks) do
  reply[#reply + 1] = check.ok and '1' or '0'
  reply[#reply + 1] = int(check.remaining)
  reply[#reply + 1] = int(math.ceil(check.reset))
  reply[#reply + 1] = int(math.ceil(check.retry))
  reply[#reply + 1] = int(check.slot)
end
return table.concat(reply, ' ')
