-- Palisade: check every window of one subject's policy, count the request in all of them only
-- when all admit it. One script call = one Redis round trip per decision.
--
-- KEYS[i]  the state of window i; every key of one subject shares a hash tag (one slot).
-- ARGV[1]  now, ms (the caller's clock: request time or the scorer's wall clock, never TIME,
--          so simulators can replay days of traffic in minutes)
-- ARGV[2]  a member unique to this call (sliding-log entries must be distinct)
-- ARGV[3 + 3(i-1)], ARGV[4 + 3(i-1)], ARGV[5 + 3(i-1)]: limit, window ms, algorithm of
--          window i ("l" sliding log: sorted set of admission times; "c" sliding counter:
--          hash b = bucket start, p = previous bucket, c = current bucket, t = last admission)
--
-- Returns { admitted (0/1), then per window: admit, remaining, reset_ms, retry_after_ms }.
-- The arithmetic mirrors limiter/window.rs operation for operation (the same IEEE doubles),
-- so both stores give the same answers; tests compare them on random arrivals.

local n = #KEYS
local now = tonumber(ARGV[1])
local member = ARGV[2]

-- Lua turns numbers into strings with 14 significant digits; write ms exactly.
local function ms(x)
  return string.format('%.0f', x)
end

local function spec(i)
  local base = 3 + 3 * (i - 1)
  return tonumber(ARGV[base]), tonumber(ARGV[base + 1]), ARGV[base + 2]
end

-- Time never runs backwards per subject: a request older than the newest admission counts as
-- that admission's time (out-of-order arrivals from several Envoy workers are safe).
-- Counter state is read once here and reused below.
local hashes = {}
for i = 1, n do
  local _, _, algo = spec(i)
  local last
  if algo == 'l' then
    local top = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
    last = tonumber(top[2])
  else
    hashes[i] = redis.call('HMGET', KEYS[i], 'b', 'p', 'c', 't')
    last = tonumber(hashes[i][4])
  end
  if last and last > now then now = last end
end

local admitted = 1
local out = { 0 }
local counters = {}

for i = 1, n do
  local limit, w, algo = spec(i)
  local admit, remaining, reset, retry
  if algo == 'l' then
    -- Entries with t + w <= now have left the window.
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ms(now - w))
    local count = redis.call('ZCARD', KEYS[i])
    local front = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    local oldest_leaves = w
    if front[2] then oldest_leaves = math.max(tonumber(front[2]) + w - now, 1) end
    if count < limit then
      admit, remaining, reset, retry = 1, limit - count - 1, oldest_leaves, 0
    else
      if not front[2] then oldest_leaves = 1 end
      admit, remaining, reset, retry = 0, 0, oldest_leaves, oldest_leaves
    end
  else
    local h = hashes[i]
    local b, p, c = tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0
    local aligned = now - now % w
    if aligned > b then
      if aligned - b == w then p = c else p = 0 end
      c = 0
      b = aligned
    end
    local elapsed = now - b
    local weight = (w - math.min(elapsed, w)) / w
    local estimate = p * weight + c
    local to_rollover = math.max(w - elapsed, 1)
    if estimate + 1 <= limit then
      admit, remaining, reset, retry = 1, math.floor(limit - estimate - 1), to_rollover, 0
    else
      -- Ms until the estimate leaves room for one more request (window.rs: counter_wait).
      local room = limit - 1
      local wait
      if c <= room and p > 0 then
        local e = w * (1 - (room - c) / p)
        wait = math.max(math.max(math.ceil(e), 0) - elapsed, 1)
      else
        local after = 0
        if c > 0 and c > room then after = math.ceil(w * (1 - room / c)) end
        wait = math.max(w - elapsed + after, 1)
      end
      admit, remaining, reset, retry = 0, 0, to_rollover, wait
    end
    counters[i] = { b, p, c }
  end
  if admit == 0 then admitted = 0 end
  out[#out + 1] = admit
  out[#out + 1] = remaining
  out[#out + 1] = reset
  out[#out + 1] = retry
end

if admitted == 1 then
  for i = 1, n do
    local _, w, algo = spec(i)
    if algo == 'l' then
      redis.call('ZADD', KEYS[i], ms(now), member)
      -- After w ms without an admission every entry has left the window.
      redis.call('PEXPIRE', KEYS[i], w)
    else
      local s = counters[i]
      redis.call('HSET', KEYS[i], 'b', ms(s[1]), 'p', s[2], 'c', s[3] + 1, 't', ms(now))
      -- The current bucket still weighs as the previous one for a whole window.
      redis.call('PEXPIRE', KEYS[i], 2 * w)
    end
  end
end
out[1] = admitted
return out
