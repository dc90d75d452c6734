-- One sync of a process's routing state with the shared one: circuit breakers of
-- every deployment it reports on, and experiment assignment counters.
--
-- The breaker follows the in-process one (aiofast routing): closed counts calls and
-- failures over a sliding window of ten buckets and opens once the window holds
-- min_calls calls with a failure share of at least failure_rate; open skips the
-- deployment until the cool-down has passed; half-open grants half_open_calls trial
-- calls across all processes, as many successes close it, one failure opens it again.
-- Outcomes reported for a breaker that is open change nothing (those calls started
-- before it opened). The time comes from Redis.
--
-- ARGV: failure_rate, min_calls, window_ms, cooldown_ms, half_open_calls, trial_lease_ms,
--       deployment count, then per deployment: calls, failures, trial successes,
--       trial failures, trials given back, wants a trial (0/1);
--       then experiment counter count, then per counter: variant, increment.
-- KEYS: one breaker hash per deployment, then one counter hash per experiment counter.
-- Reply: space-separated, per deployment: phase (0 closed, 1 open, 2 half-open),
--        milliseconds until an open breaker cools down, trials granted (0/1).

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local failure_rate = tonumber(ARGV[1])
local min_calls = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local cooldown = tonumber(ARGV[4])
local half_open_calls = tonumber(ARGV[5])
local lease = tonumber(ARGV[6])
local count = tonumber(ARGV[7])
local bucket_ms = window / 10
local newest = math.floor(now / bucket_ms)
local ttl = math.ceil(window + cooldown + lease)

local function reset(key, phase, open_until)
  redis.call('DEL', key)
  redis.call('HSET', key, 'phase', phase, 'until', open_until, 'trials', 0, 'successes', 0,
    'granted_at', 0)
end

local function count_window(key, calls, failures)
  if calls > 0 then
    redis.call('HINCRBY', key, 'c' .. newest, calls)
    redis.call('HINCRBY', key, 'f' .. newest, failures)
  end
  local fields = redis.call('HGETALL', key)
  local total, failed = 0, 0
  for i = 1, #fields, 2 do
    local name = fields[i]
    local kind = string.sub(name, 1, 1)
    if kind == 'c' or kind == 'f' then
      local slot = tonumber(string.sub(name, 2))
      if slot <= newest - 10 then
        redis.call('HDEL', key, name)
      elseif kind == 'c' then
        total = total + tonumber(fields[i + 1])
      else
        failed = failed + tonumber(fields[i + 1])
      end
    end
  end
  return total, failed
end

local reply = {}
local argi = 8
for d = 1, count do
  local key = KEYS[d]
  local calls, failures = tonumber(ARGV[argi]), tonumber(ARGV[argi + 1])
  local trial_ok, trial_failed = tonumber(ARGV[argi + 2]), tonumber(ARGV[argi + 3])
  local given_back, wants_trial = tonumber(ARGV[argi + 4]), ARGV[argi + 5] == '1'
  argi = argi + 6

  local phase = tonumber(redis.call('HGET', key, 'phase') or '0')
  local open_until = tonumber(redis.call('HGET', key, 'until') or '0')
  if phase == 1 and now >= open_until then
    reset(key, 2, 0)
    phase = 2
  end

  if phase == 2 then
    local trials = tonumber(redis.call('HGET', key, 'trials') or '0')
    local granted_at = tonumber(redis.call('HGET', key, 'granted_at') or '0')
    if trial_failed > 0 then
      reset(key, 1, now + cooldown)
      phase, open_until = 1, now + cooldown
    else
      -- Trials granted to a process that never reported them (it died) lapse.
      if trials > 0 and now - granted_at > lease then
        trials = 0
      end
      trials = math.max(trials - trial_ok - given_back, 0)
      local successes = redis.call('HINCRBY', key, 'successes', trial_ok)
      redis.call('HSET', key, 'trials', trials)
      if successes >= half_open_calls then
        reset(key, 0, 0)
        phase = 0
      end
    end
  elseif phase == 0 then
    local total, failed = count_window(key, calls, failures)
    if total >= min_calls and failed >= failure_rate * total then
      reset(key, 1, now + cooldown)
      phase, open_until = 1, now + cooldown
    end
  end

  local granted = 0
  if phase == 2 and wants_trial then
    local trials = tonumber(redis.call('HGET', key, 'trials') or '0')
    if trials < half_open_calls then
      redis.call('HSET', key, 'trials', trials + 1, 'granted_at', now)
      granted = 1
    end
  end
  redis.call('PEXPIRE', key, ttl)

  reply[#reply + 1] = string.format('%d', phase)
  reply[#reply + 1] = string.format('%d', phase == 1 and math.max(open_until - now, 0) or 0)
  reply[#reply + 1] = string.format('%d', granted)
end

local counters = tonumber(ARGV[argi])
argi = argi + 1
for c = 1, counters do
  local key = KEYS[count + c]
  redis.call('HINCRBY', key, ARGV[argi], tonumber(ARGV[argi + 1]))
  redis.call('PEXPIRE', key, 90 * 86400000)
  argi = argi + 2
end

return table.concat(reply, ' ')
