-- One admission: every meter of every limit that applies, decided and reserved atomically.
--
-- The same decisions as the in-process limiter (aiofast.limits), on state kept here:
-- GCRA for requests and tokens, a sorted set of holders for concurrency, spend per
-- calendar period or rolling-window slot for budgets. The time comes from Redis (TIME),
-- so gateways with drifting clocks agree. A request is admitted when no enforced limit
-- refuses it; then every limit none of whose meters refused commits (a shadow limit
-- that would have refused takes nothing). Nothing is written on a refusal.
--
-- ARGV: reservation id, number of checks, then per check: kind, limit group (meters of
-- one limit share it), shadow ('1'/'0') and the fields of its kind. KEYS are consumed
-- in check order.
--
--   rate         KEYS meter (hash: t = TAT,     ARGV interval_ms, burst, amount, hold_ms
--                c = time charged, in ms)           (hold_ms > 0: tokens, settled later)
--                and, for tokens, holds
--   concurrency  KEYS holders                  ARGV max, lease_ms
--   budget       KEYS state, holds, spend of   ARGV limit, amount, hold_ms, start_ms, end_ms,
--                the previous, current and          retention_ms, downgrade_at, monthly (1/0)
--                next calendar period
--   rolling      KEYS state, holds             ARGV limit, amount, hold_ms, window_ms,
--                                                   slot_ms, downgrade_at
--
-- Budget state keeps what is reserved (and, for rolling windows, the spend per slot);
-- holds are "<id>:<amount>" scored by expiry. Amounts are integer nano-dollars.
--
-- Reply: space-separated numbers: admitted (1/0), now_ms, then per check: admitted,
-- remaining, reset_ms, retry_ms (-1: waiting will not help), near exhaustion (1/0), a
-- code (0 fits, 1 wait, 2 too large ever to fit, 3 spent for this month) and, for rate
-- meters, the charge mark the settle needs (see commit).

-- Loaded after reservation_prelude.lua: now, id, count, arg(), num(), key(), int().

local FITS, WAIT, TOO_LARGE, EXHAUSTED = 0, 1, 2, 3
local ROLLING_SLOTS = 16

-- The spend key of the calendar period Redis's clock is in, and when that period ends.
local function calendar_period(check)
  if now < check.start_ms then
    return check.spend[1], check.start_ms
  elseif now >= check.end_ms then
    return check.spend[3], -1
  end
  return check.spend[2], check.end_ms
end

-- Holds never settled (crashed handler, lost client) are charged at their reserved
-- amount once they expire, to the period they expire in.
local function expire_holds(check, charge_key, charge_field)
  local expired = redis.call('ZRANGEBYSCORE', check.holds, '-inf', now, 'LIMIT', 0, 64)
  for _, member in ipairs(expired) do
    local amount = tonumber(string.match(member, ':(%d+)$'))
    redis.call('HINCRBY', check.state, 'reserved', int(-amount))
    redis.call('HINCRBY', charge_key, charge_field, int(amount))
    redis.call('ZREM', check.holds, member)
  end
end

local function decide_rate(check)
  if check.holds then
    -- A token hold never settled is settled at its reserved amount: nothing to undo.
    redis.call('ZREMRANGEBYSCORE', check.holds, '-inf', now)
  end
  local state = redis.call('HMGET', check.key, 't', 'c')
  check.charged = tonumber(state[2]) or 0
  local tat = tonumber(state[1]) or now
  if tat < now then
    tat = now
  end
  check.from = tat
  local span = check.burst * check.interval
  local new_tat = tat + check.amount * check.interval
  check.before = math.floor((span - (tat - now)) / check.interval)
  check.reset_before = tat - now
  if check.amount > check.burst then
    check.code, check.retry = TOO_LARGE, -1
  elseif new_tat <= now + span then
    check.code, check.retry, check.new_tat = FITS, 0, new_tat
    check.after = math.floor((span - (new_tat - now)) / check.interval)
    check.reset = new_tat - now
    return
  else
    check.code, check.retry = WAIT, new_tat - now - span
  end
  check.after, check.reset = check.before, check.reset_before
end

local function decide_concurrency(check)
  redis.call('ZREMRANGEBYSCORE', check.key, '-inf', now)
  local held = redis.call('ZCARD', check.key)
  check.before = check.max - held
  check.reset, check.reset_before = 0, 0
  if held < check.max then
    check.code, check.retry, check.after = FITS, 0, check.before - 1
  else
    -- No meter knows when an in-flight request ends: a one-second hint.
    check.code, check.retry, check.after = WAIT, 1000, check.before
  end
end

local function budget_verdict(check, spent, ends_in)
  local reserved = tonumber(redis.call('HGET', check.state, 'reserved')) or 0
  local committed = spent + reserved
  check.before = math.max(check.limit - committed, 0)
  check.reset, check.reset_before = math.max(ends_in, 0), math.max(ends_in, 0)
  if check.amount > check.limit then
    check.code, check.retry, check.after = TOO_LARGE, -1, check.before
    return false
  end
  local after = committed + check.amount
  if after <= check.limit then
    check.code, check.retry, check.after = FITS, 0, check.limit - after
    check.near = check.downgrade_at > 0 and after >= check.downgrade_at
    return false
  end
  check.after = check.before
  return after - check.limit
end

local function decide_budget(check)
  local spend_key, ends_at = calendar_period(check)
  expire_holds(check, spend_key, 'spent')
  check.spend_key = spend_key
  local spent = tonumber(redis.call('HGET', spend_key, 'spent')) or 0
  local ends_in = ends_at >= 0 and ends_at - now or 0
  if budget_verdict(check, spent, ends_in) then
    if check.monthly then
      check.code, check.retry = EXHAUSTED, -1
    else
      check.code, check.retry = WAIT, ends_in
    end
  end
end

-- Rolling windows keep the spend of each of 16 slots (window / 16 wide) in the state
-- hash; a slot counts in full until it has wholly left the window.
local function decide_rolling(check)
  local newest = math.floor(now / check.slot_ms)
  expire_holds(check, check.state, 's' .. newest)

  local fields = redis.call('HGETALL', check.state)
  local spent, slots = 0, {}
  for i = 1, #fields, 2 do
    local name = fields[i]
    if string.sub(name, 1, 1) == 's' then
      local slot, value = tonumber(string.sub(name, 2)), tonumber(fields[i + 1])
      if slot <= newest - ROLLING_SLOTS then
        redis.call('HDEL', check.state, name)
      else
        spent = spent + value
        slots[#slots + 1] = {slot, value}
      end
    end
  end
  table.sort(slots, function(a, b) return a[1] < b[1] end)

  local window_ends = check.slot_ms * ROLLING_SLOTS
  local reset = 0
  if #slots > 0 then
    reset = (slots[#slots][1] + ROLLING_SLOTS) * check.slot_ms - now
  end
  local excess = budget_verdict(check, spent, reset)
  if excess then
    -- Wait until enough of the oldest slots have left the window.
    check.code, check.retry = WAIT, window_ends
    local freed = 0
    for _, slot in ipairs(slots) do
      freed = freed + slot[2]
      if freed >= excess then
        check.retry = math.max((slot[1] + ROLLING_SLOTS) * check.slot_ms - now, 1)
        break
      end
    end
  end
end

local function hold(check, ttl)
  redis.call('HINCRBY', check.state, 'reserved', int(check.amount))
  redis.call('ZADD', check.holds, now + check.hold, id .. ':' .. int(check.amount))
  redis.call('PEXPIRE', check.state, ttl)
  redis.call('PEXPIRE', check.holds, ttl)
end

local function commit(check)
  if check.kind == 'rate' then
    -- `c` counts all time ever charged here: a reservation remembers it (its mark),
    -- so its settle knows what later admissions added and never refunds below that.
    check.charged = check.charged + (check.new_tat - check.from)
    redis.call('HSET', check.key, 't', string.format('%.3f', check.new_tat),
      'c', string.format('%.3f', check.charged))
    redis.call('PEXPIRE', check.key, math.ceil(check.new_tat - now) + 1)
    if check.holds then
      redis.call('ZADD', check.holds, now + check.hold, id)
      redis.call('PEXPIRE', check.holds, check.hold)
    end
  elseif check.kind == 'concurrency' then
    redis.call('ZADD', check.key, now + check.lease, id)
    redis.call('PEXPIRE', check.key, check.lease)
  elseif check.kind == 'budget' then
    hold(check, check.hold + check.retention)
    if redis.call('PTTL', check.spend_key) < 0 then
      redis.call('PEXPIRE', check.spend_key, math.max(check.end_ms - now, 0) + check.retention)
    end
  else
    hold(check, check.hold + check.slot_ms * ROLLING_SLOTS)
  end
end

local checks = {}
for i = 1, count do
  local check = {kind = arg(), group = arg(), shadow = arg() == '1', near = false, charged = 0}
  if check.kind == 'rate' then
    check.key = key()
    check.interval, check.burst, check.amount, check.hold = num(), num(), num(), num()
    if check.hold > 0 then
      check.holds = key()
    end
    decide_rate(check)
  elseif check.kind == 'concurrency' then
    check.key = key()
    check.max, check.lease = num(), num()
    decide_concurrency(check)
  elseif check.kind == 'budget' then
    check.state, check.holds = key(), key()
    check.spend = {key(), key(), key()}
    check.limit, check.amount, check.hold = num(), num(), num()
    check.start_ms, check.end_ms, check.retention = num(), num(), num()
    check.downgrade_at, check.monthly = num(), arg() == '1'
    decide_budget(check)
  elseif check.kind == 'rolling' then
    check.state, check.holds = key(), key()
    check.limit, check.amount, check.hold = num(), num(), num()
    check.window, check.slot_ms, check.downgrade_at = num(), num(), num()
    decide_rolling(check)
  else
    return redis.error_reply('aiofast admit: unknown check kind ' .. tostring(check.kind))
  end
  checks[i] = check
end

-- A limit commits only if all of its meters fit; the request, only if no enforced
-- limit refuses.
local admitted = true
local group_fits = {}
for _, check in ipairs(checks) do
  local fits = check.code == FITS
  group_fits[check.group] = (group_fits[check.group] ~= false) and fits
  if not fits and not check.shadow then
    admitted = false
  end
end

local reply = {admitted and '1' or '0', int(now)}
for _, check in ipairs(checks) do
  local commits = admitted and group_fits[check.group]
  if commits then
    commit(check)
  end
  local remaining = commits and check.after or check.before
  local reset = commits and check.reset or check.reset_before
  reply[#reply + 1] = check.code == FITS and '1' or '0'
  reply[#reply + 1] = int(math.max(remaining, 0))
  reply[#reply + 1] = int(math.ceil(math.max(reset, 0)))
  reply[#reply + 1] = int(math.ceil(check.retry))
  reply[#reply + 1] = (commits and check.near) and '1' or '0'
  reply[#reply + 1] = int(check.code)
  reply[#reply + 1] = string.format('%.3f', check.charged)
end
return table.concat(reply, ' ')
