-- The start shared by admit.lua and settle.lua, which are each loaded with this file
-- in front: the time from Redis's own clock, the common head of ARGV (reservation id,
-- number of checks or parts) and readers that walk the rest of ARGV and KEYS in order.

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

local function num()
  return tonumber(arg())
end

local function key()
  local value = KEYS[keyi]
  keyi = keyi + 1
  return value
end

local function int(value)
  return string.format('%d', value)
end
