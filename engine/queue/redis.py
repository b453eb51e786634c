"""The `redis` transport: Redis Streams consumer groups, for engines on several machines.

Keys, all under `prefix` (default "imagine"):
- `{prefix}:jobs:{model}`: one stream per model (the name %-escaped: hub ids and paths hold "/" and ":"),
  entries `job=<id>`, read by the consumer group "engines". `{prefix}:models` lists the models seen.
- `{prefix}:job:{id}`: a hash with the job's body, model, batch_key, images, state (queued / claimed /
  finished), worker, stream and entry id, cancel flag and enqueued_at. The hash, not the stream, is the
  truth about a job; every change of state happens in one Lua script, so no two engines ever disagree.
- `{prefix}:events:{id}`: the job's events (MAXLEN ~500, expiring 7 days after the last one); the entry
  ids are the cursors, so a bot that reconnects replays from the last id it saw.
- `{prefix}:dead`: jobs set aside after too many attempts. `{prefix}:engine:{worker}` (with a TTL) and
  the set `{prefix}:engines`: what each engine last advertised.
- Fair turns (`engine.queue.fair`), per model token: `{prefix}:owners:{model}`, the owners with waiting jobs;
  `{prefix}:owner-jobs:{model}:{hex owner}`, an owner's waiting jobs scored by stream order;
  `{prefix}:fair:{model}`, each owner's virtual time; `{prefix}:fair-clock:{model}`, the model's clock.
- `{prefix}:nudge:{model}`: a one-entry stream touched when a job is handed back, so that engines waiting
  for work wake up at once (a handed-back job adds nothing to the jobs stream).

Claiming, in one script per call: for each stream, the claimable jobs are the pending entries idle longer
than a lease (their engine died) and the waiting jobs in each owner's line (undelivered, or handed back).
The owners take turns (`engine.queue.fair`), for the first job and for the rest of the batch (same batch
key, up to `max_images`), and the fairness state changes in the same script. Pending ones are moved with
XCLAIM (XPENDING IDLE + XCLAIM rather than XAUTOCLAIM, so that other jobs are left untouched); undelivered
ones are delivered with XREADGROUP, which cannot skip entries: the ones it passes over are handed straight
back to the pseudo-consumer "~released" with an idle time of "since 1970" and their delivery count reset,
still waiting in their owners' lines, untried. Delivery counts
are attempts: the next claim of an entry delivered `max_attempts` times dead-letters it instead. `release`
hands back with the count lowered by one (RETRYCOUNT), `recover` with the count kept. A heartbeat is an
XCLAIM of the engine's own entry with JUSTID, which restarts the idle clock without counting a delivery.
When nothing is claimable the caller waits with XREAD BLOCK on the jobs and nudge streams, waking at least
every second (or every half lease if shorter) to notice leases that ran out.

The scripts build job, events, dead-letter and fairness key names from the prefix, so this needs one Redis
server (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import urllib.parse
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
import redis.exceptions
from redis.commands.core import Script

from engine.errors import QueueError
from engine.jobs import Event, EventKind, Job
from engine.queue import fair
from engine.queue.base import EngineStatus, QueuePosition

GROUP = "engines"
RELEASED = "~released"  # pseudo-consumer holding handed-back entries; no engine may use this name
EVENTS_MAXLEN = 500
EVENTS_TTL_SECONDS = 7 * 24 * 3600  # also how long a finished job's hash outlives it when nobody forgets it
DEAD_MAXLEN = 10_000
SCAN = 200  # entries looked at per stream when building a batch
POSITION_SCAN = 10_000  # entries counted at most by position()
_ATTEMPTS = "__ATTEMPTS__"
_DEAD_REASON = (
    f"This job stopped the engine {_ATTEMPTS} times, so it was set aside instead of being tried again. "
    "Try a different prompt or settings."
)

T = TypeVar("T")

# Shared by the scripts below. ARGV[1..4] are always: prefix, group, events maxlen, events TTL.
_LUA_COMMON = """
local prefix, group, events_maxlen, events_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local function job_key(job) return prefix .. ':job:' .. job end

local function add_event(job, event)
  local key = prefix .. ':events:' .. job
  redis.call('XADD', key, 'MAXLEN', '~', events_maxlen, '*', 'event', event)
  redis.call('EXPIRE', key, events_ttl)
end

-- Fair turns (see the module docstring): per model token, the owners with waiting jobs, each owner's waiting
-- jobs in stream order, each owner's virtual time and the model's clock.
local function hex(s) return (string.gsub(s, '.', function(c) return string.format('%02x', string.byte(c)) end)) end
local function owners_key(token) return prefix .. ':owners:' .. token end
local function owner_jobs_key(token, owner) return prefix .. ':owner-jobs:' .. token .. ':' .. hex(owner) end
local function entry_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function entry_order(id)
  local ms, seq = entry_parts(id)
  return ms * 4096 + math.min(seq, 4095)
end
local function entry_le(a, b)
  local a_ms, a_seq = entry_parts(a)
  local b_ms, b_seq = entry_parts(b)
  return a_ms < b_ms or (a_ms == b_ms and a_seq <= b_seq)
end

-- A job starts or stops waiting for its owner's turn.
local function enqueue(job)
  local h = redis.call('HMGET', job_key(job), 'token', 'owner', 'entry')
  if not h[1] then return end
  local owner = h[2] or ''
  redis.call('ZADD', owner_jobs_key(h[1], owner), entry_order(h[3]), job)
  redis.call('SADD', owners_key(h[1]), owner)
end
local function dequeue(job)
  local h = redis.call('HMGET', job_key(job), 'token', 'owner')
  if not h[1] then return end
  local owner = h[2] or ''
  local key = owner_jobs_key(h[1], owner)
  redis.call('ZREM', key, job)
  if redis.call('ZCARD', key) == 0 then redis.call('SREM', owners_key(h[1]), owner) end
end

-- The one way a job ends: its terminal event, the state, and its entry gone from the jobs stream.
local function end_job(job, stream, entry, event)
  dequeue(job)
  add_event(job, event)
  redis.call('HSET', job_key(job), 'state', 'finished')
  redis.call('EXPIRE', job_key(job), events_ttl)
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
end

local function nudge(key) redis.call('XADD', key, 'MAXLEN', '1', '*', 'n', '1') end
"""

# KEYS: job hash, jobs stream, models set. ARGV[5..]: job id, body, model, batch key, images, enqueued_at, nudge key,
# owner, weight, model token.
_SUBMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.pcall('XGROUP', 'CREATE', KEYS[2], group, '0', 'MKSTREAM')  -- BUSYGROUP when it exists: fine
local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[5])
redis.call('HSET', KEYS[1], 'body', ARGV[6], 'model', ARGV[7], 'batch_key', ARGV[8], 'images', ARGV[9],
  'state', 'queued', 'cancel', '0', 'enqueued_at', ARGV[10], 'stream', KEYS[2], 'nudge', ARGV[11], 'entry', entry,
  'owner', ARGV[12], 'weight', ARGV[13], 'token', ARGV[14])
redis.call('SADD', KEYS[3], ARGV[7])
enqueue(ARGV[5])
return 1
"""

# KEYS: n jobs streams in preference order, then their n nudge streams.
# ARGV[5..]: worker, lease ms, max attempts, max images, prefer-loaded ms, dead-letter key, dead-letter reason,
# dead-letter event (both with the attempts placeholder), cancelled event, scan size, dead-letter maxlen.
# Returns {taken, waits}: taken = {job id, body, ...}; waits = {key, last id, ...} to block on when taken is empty.
_CLAIM = """
local worker, released = ARGV[5], ARGV[6]
local lease_ms, max_attempts = tonumber(ARGV[7]), tonumber(ARGV[8])
local max_images, prefer_ms = tonumber(ARGV[9]), tonumber(ARGV[10])
local dead_key, dead_reason, dead_event, cancelled_event = ARGV[11], ARGV[12], ARGV[13], ARGV[14]
local scan, dead_maxlen = tonumber(ARGV[15]), ARGV[16]
local n = #KEYS / 2
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function entry_ms(id) return tonumber(string.match(id, '^(%d+)')) end

-- The group's last delivered id; nil when the stream does not exist. Recreates a missing group.
local function last_delivered(stream)
  if redis.call('EXISTS', stream) == 0 then return nil end
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local name, last
    for i = 1, #info, 2 do
      if info[i] == 'name' then name = info[i + 1] elseif info[i] == 'last-delivered-id' then last = info[i + 1] end
    end
    if name == group then return last end
  end
  redis.call('XGROUP', 'CREATE', stream, group, '0')
  return '0-0'
end

local function job_of(stream, id)
  local found = redis.call('XRANGE', stream, id, id)
  if #found == 0 then return nil end
  return found[1][2][2]
end

local FIELDS = {'state', 'batch_key', 'images', 'body', 'cancel', 'owner', 'weight', 'token', 'entry'}
local function fields(job) return redis.call('HMGET', job_key(job), unpack(FIELDS)) end

local function weight_of(w)
  local n = tonumber(w)
  if not n or n ~= n or n < 1 or n == math.huge then return 1 end
  return math.floor(n)
end
local function rounded(v) return math.floor(v * 1e9 + 0.5) end

local function take(stream, nudge_key, token, last)
  local fair_key, clock_key = prefix .. ':fair:' .. token, prefix .. ':fair-clock:' .. token
  local clock = tonumber(redis.call('GET', clock_key) or '0')
  local vtimes, charged = {}, {}
  local function start(owner)
    local v = vtimes[owner]
    if v == nil then
      local stored = redis.call('ZSCORE', fair_key, owner)
      v = stored and tonumber(stored) or clock
      vtimes[owner] = v
    end
    return math.max(v, clock)
  end

  -- A job queued by an earlier release (no token): give it its place in its owner's line.
  local function adopt(job, h)
    redis.call('HSET', job_key(job), 'token', token, 'owner', h[6] or '', 'weight', h[7] or '1')
    enqueue(job)
  end

  -- 1. Pending entries idle longer than a lease: leases that ran out (candidates of their own), and jobs handed
  -- back (waiting in their owner's line already). Ends whatever must not run again.
  local expired = {}  -- owner -> candidates, oldest first
  for _, p in ipairs(redis.call('XPENDING', stream, group, 'IDLE', lease_ms, '-', '+', scan)) do
    local id, count = p[1], tonumber(p[4])
    local job = job_of(stream, id)
    if not job then
      redis.call('XACK', stream, group, id)
    else
      local h = fields(job)
      if not h[1] or h[1] == 'finished' then
        redis.call('XACK', stream, group, id)
        redis.call('XDEL', stream, id)
      elseif h[5] == '1' then
        end_job(job, stream, id, cancelled_event)
      elseif count >= max_attempts then
        local reason = string.gsub(dead_reason, '__ATTEMPTS__', tostring(count))
        local event = string.gsub(dead_event, '__ATTEMPTS__', tostring(count))
        redis.call('XADD', dead_key, 'MAXLEN', '~', dead_maxlen, '*', 'job', job, 'reason', reason)
        end_job(job, stream, id, event)
      elseif h[1] == 'claimed' then
        local owner = h[6] or ''
        expired[owner] = expired[owner] or {}
        table.insert(expired[owner], {job = job, entry = id, order = entry_order(id), owner = owner,
          weight = weight_of(h[7]), images = tonumber(h[3]), key = h[2], body = h[4], count = count})
      elseif not h[8] then
        adopt(job, h)
      end
    end
  end
  -- Undelivered jobs from an earlier release come first in the stream: adopt them.
  for _, e in ipairs(redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 16)) do
    local h = fields(e[2][2])
    if h[8] then break end
    if h[1] == 'queued' then adopt(e[2][2], h) end
  end

  -- 2. One reader per owner: its expired leases and its waiting jobs, oldest first.
  local stale, readers, seen = {}, {}, {}
  local function reader(owner)
    if seen[owner] then return end
    seen[owner] = true
    table.insert(readers, {owner = owner, key = owner_jobs_key(token, owner), offset = 0, buf = {}, i = 1,
      done = false, extra = expired[owner] or {}, e = 1})
  end
  for _, owner in ipairs(redis.call('SMEMBERS', owners_key(token))) do reader(owner) end
  for owner, _ in pairs(expired) do reader(owner) end
  local function peek(r)
    while r.i > #r.buf and not r.done do
      local found = redis.call('ZRANGE', r.key, r.offset, r.offset + 15, 'WITHSCORES')
      r.offset = r.offset + 16
      r.done = #found < 32 or r.offset >= scan
      r.buf, r.i = {}, 1
      for k = 1, #found, 2 do
        local job = found[k]
        local h = fields(job)
        if h[1] == 'queued' and h[8] == token and (h[6] or '') == r.owner then
          table.insert(r.buf, {job = job, entry = h[9], order = tonumber(found[k + 1]), owner = r.owner,
            weight = weight_of(h[7]), images = tonumber(h[3]), key = h[2], body = h[4]})
        else
          table.insert(stale, {r.key, job, r.owner})
        end
      end
    end
    local z, x = r.buf[r.i], r.extra[r.e]
    if z and x then
      if x.order <= z.order then return x, 'e' end
      return z, 'i'
    end
    if x then return x, 'e' end
    return z, 'i'
  end
  local function pop(r)
    local _, which = peek(r)
    r[which] = r[which] + 1
  end
  local function pick(fits)
    local best, best_reader, best_rank
    for _, r in ipairs(readers) do
      local c = peek(r)
      while c and not fits(c) do
        pop(r)
        c = peek(r)
      end
      if c then
        local rank = rounded(start(c.owner))
        if not best or rank < best_rank or (rank == best_rank and c.order < best.order) then
          best, best_reader, best_rank = c, r, rank
        end
      end
    end
    if best then pop(best_reader) end
    return best
  end

  -- 3. Take: pending entries move to this worker now; undelivered ones are delivered together at the end.
  local taken, deliver, taken_ids, latest, images = {}, {}, {}, nil, 0
  local function claim_one(c)
    if c.count == nil then
      if entry_le(c.entry, last) then
        local p = redis.call('XPENDING', stream, group, c.entry, c.entry, 1)
        if #p == 0 then
          table.insert(stale, {owner_jobs_key(token, c.owner), c.job, c.owner})
          return false
        end
        c.count = tonumber(p[1][4])
        if c.count >= max_attempts then
          local reason = string.gsub(dead_reason, '__ATTEMPTS__', tostring(c.count))
          local event = string.gsub(dead_event, '__ATTEMPTS__', tostring(c.count))
          redis.call('XADD', dead_key, 'MAXLEN', '~', dead_maxlen, '*', 'job', c.job, 'reason', reason)
          end_job(c.job, stream, c.entry, event)
          return false
        end
      else
        table.insert(deliver, c.entry)
        if not latest or entry_le(latest, c.entry) then latest = c.entry end
      end
    end
    if c.count ~= nil then
      redis.call('XCLAIM', stream, group, worker, 0, c.entry, 'RETRYCOUNT', c.count + 1, 'JUSTID')
    end
    dequeue(c.job)
    redis.call('HSET', job_key(c.job), 'state', 'claimed', 'worker', worker)
    taken_ids[c.entry] = true
    images = images + c.images
    table.insert(taken, c.job)
    table.insert(taken, c.body)
    return true
  end
  local function charge(c)
    vtimes[c.owner] = start(c.owner) + c.images / c.weight
    charged[c.owner] = true
  end

  local first
  repeat
    first = pick(function() return true end)
    if not first then break end
  until claim_one(first)
  if first then
    clock = math.max(clock, start(first.owner))
    charge(first)
    while images < max_images do
      local c = pick(function(c) return c.key == first.key and images + c.images <= max_images end)
      if not c then break end
      if claim_one(c) then charge(c) end
    end
  end

  -- Deliver what was taken from the undelivered ones; whatever XREADGROUP passes over is handed straight
  -- back to the pseudo-consumer, as never tried and ready to be claimed.
  if latest then
    local passed = redis.call('XRANGE', stream, '(' .. last, latest)
    redis.call('XREADGROUP', 'GROUP', group, worker, 'COUNT', #passed, 'STREAMS', stream, '>')
    local handed_back = false
    for _, e in ipairs(passed) do
      local id = e[1]
      if not taken_ids[id] then
        local state = redis.call('HGET', job_key(e[2][2]), 'state')
        if not state or state == 'finished' then
          redis.call('XACK', stream, group, id)
          redis.call('XDEL', stream, id)
        else
          redis.call('XCLAIM', stream, group, released, 0, id, 'TIME', 0, 'RETRYCOUNT', 0, 'JUSTID')
          handed_back = true
        end
      end
    end
    if handed_back then nudge(nudge_key) end
  end

  for _, s in ipairs(stale) do
    redis.call('ZREM', s[1], s[2])
    if redis.call('ZCARD', s[1]) == 0 then redis.call('SREM', owners_key(token), s[3]) end
  end
  if first then
    for owner, _ in pairs(charged) do redis.call('ZADD', fair_key, vtimes[owner], owner) end
    redis.call('SET', clock_key, clock)
    redis.call('ZREMRANGEBYSCORE', fair_key, '-inf', clock)
  end
  return taken
end

-- Which streams to try, in order: those whose oldest claimable job waited longer than prefer_ms (oldest
-- first), then the others in the caller's order of preference.
local candidates = {}
for i = 1, n do
  local last = last_delivered(KEYS[i])
  if last then
    local first
    local pending = redis.call('XPENDING', KEYS[i], group, 'IDLE', lease_ms, '-', '+', 1)
    if #pending > 0 then
      first = pending[1][1]
    else
      local waiting = redis.call('XRANGE', KEYS[i], '(' .. last, '+', 'COUNT', 1)
      if #waiting > 0 then first = waiting[1][1] end
    end
    if first then
      -- Stream ids carry milliseconds; within one, the submitter's enqueued_at breaks the tie.
      local job = job_of(KEYS[i], first)
      local at = job and tonumber(redis.call('HGET', job_key(job), 'enqueued_at')) or 0
      table.insert(candidates, {index = i, last = last, ms = entry_ms(first), at = at})
    end
  end
end
table.sort(candidates, function(a, b)
  local a_old, b_old = now_ms - a.ms >= prefer_ms, now_ms - b.ms >= prefer_ms
  if a_old ~= b_old then return a_old end
  if a_old and a.ms ~= b.ms then return a.ms < b.ms end
  if a_old and a.at ~= b.at then return a.at < b.at end
  return a.index < b.index
end)
for _, c in ipairs(candidates) do
  local taken = take(KEYS[c.index], KEYS[n + c.index], ARGV[16 + c.index], c.last)
  if #taken > 0 then return {taken, {}} end
end

local waits = {}
for i = 1, #KEYS do
  local newest = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
  table.insert(waits, KEYS[i])
  if #newest > 0 then table.insert(waits, newest[1][1]) else table.insert(waits, '0-0') end
end
return {{}, waits}
"""

# ARGV[5..]: job id, worker.
_HEARTBEAT = """
local h = redis.call('HMGET', job_key(ARGV[5]), 'state', 'worker', 'stream', 'entry')
if h[1] ~= 'claimed' or h[2] ~= ARGV[6] then return 0 end
local ids = redis.call('XCLAIM', h[3], group, ARGV[6], 0, h[4], 'JUSTID')
if #ids == 0 then return 0 end
return 1
"""

# ARGV[5..]: job id, worker, event, terminal ('1' or '0').
_REPORT = """
local job = ARGV[5]
local h = redis.call('HMGET', job_key(job), 'state', 'worker', 'stream', 'entry')
if h[1] ~= 'claimed' or h[2] ~= ARGV[6] then return 0 end
if ARGV[8] == '1' then end_job(job, h[3], h[4], ARGV[7]) else add_event(job, ARGV[7]) end
return 1
"""

# ARGV[5..]: job id, cancelled event.
_CANCEL = """
local job = ARGV[5]
local h = redis.call('HMGET', job_key(job), 'state', 'stream', 'entry')
if h[1] == 'queued' then
  end_job(job, h[2], h[3], ARGV[6])
  return 1
elseif h[1] == 'claimed' then
  redis.call('HSET', job_key(job), 'cancel', '1')
  return 1
end
return 0
"""

# ARGV[5..]: job id, worker, released consumer.
_RELEASE = """
local job = ARGV[5]
local h = redis.call('HMGET', job_key(job), 'state', 'worker', 'stream', 'entry', 'nudge')
if h[1] ~= 'claimed' or h[2] ~= ARGV[6] then return 0 end
local pending = redis.call('XPENDING', h[3], group, h[4], h[4], 1)
local count = 1
if #pending > 0 then count = tonumber(pending[1][4]) end
redis.call('XCLAIM', h[3], group, ARGV[7], 0, h[4], 'TIME', 0, 'RETRYCOUNT', math.max(count - 1, 0), 'JUSTID')
redis.call('HSET', job_key(job), 'state', 'queued')
redis.call('HDEL', job_key(job), 'worker')
enqueue(job)
nudge(h[5])
return 1
"""

# KEYS: jobs streams, then their nudge streams. ARGV[5..]: worker, released consumer.
_RECOVER = """
local worker, released = ARGV[5], ARGV[6]
local n = #KEYS / 2
local recovered = 0
for i = 1, n do
  local stream = KEYS[i]
  local handed_back = false
  if redis.call('EXISTS', stream) == 1 then
    for _, p in ipairs(redis.call('XPENDING', stream, group, '-', '+', 100000, worker)) do
      local id = p[1]
      local found = redis.call('XRANGE', stream, id, id)
      local h = {}
      if #found > 0 then h = redis.call('HMGET', job_key(found[1][2][2]), 'state', 'worker') end
      if h[1] == 'claimed' and h[2] == worker then
        redis.call('XCLAIM', stream, group, released, 0, id, 'TIME', 0, 'JUSTID')
        redis.call('HSET', job_key(found[1][2][2]), 'state', 'queued')
        redis.call('HDEL', job_key(found[1][2][2]), 'worker')
        enqueue(found[1][2][2])
        recovered = recovered + 1
        handed_back = true
      else
        redis.call('XACK', stream, group, id)  -- nothing left to run under this id
      end
    end
  end
  if handed_back then nudge(KEYS[n + i]) end
end
return recovered
"""

# ARGV[5..]: job id, scan limit. Returns {jobs ahead, images ahead}, or nil when the job is not waiting: its owner's
# waiting jobs before it, and each other owner's share of turns meanwhile (see `fair.jobs_ahead`).
_POSITION = """
local h = redis.call('HMGET', job_key(ARGV[5]), 'state', 'stream', 'entry', 'token', 'owner', 'weight')
if h[1] ~= 'queued' then return nil end
local budget = tonumber(ARGV[6])
local jobs, images = 0, 0
if not h[4] then  -- queued by an earlier release: stream order
  for _, e in ipairs(redis.call('XRANGE', h[2], '-', '(' .. h[3], 'COUNT', budget)) do
    local other = redis.call('HMGET', job_key(e[2][2]), 'state', 'images')
    if other[1] == 'queued' then
      jobs = jobs + 1
      images = images + tonumber(other[2])
    end
  end
  return {jobs, images}
end
local token, owner, mine = h[4], h[5] or '', entry_order(h[3])
local my_weight = math.max(1, math.floor(tonumber(h[6]) or 1))
local own_jobs, own_images = 0, 0
local own_key = owner_jobs_key(token, owner)
local rank = redis.call('ZRANK', own_key, ARGV[5]) or 0
local before = {}
if rank > 0 then before = redis.call('ZRANGE', own_key, math.max(0, rank - budget), rank - 1) end
for _, job in ipairs(before) do
  local other = redis.call('HMGET', job_key(job), 'state', 'images')
  if other[1] == 'queued' then
    own_jobs = own_jobs + 1
    own_images = own_images + tonumber(other[2])
  end
end
jobs, images = own_jobs, own_images
for _, other_owner in ipairs(redis.call('SMEMBERS', owners_key(token))) do
  if other_owner ~= owner and budget > 0 then
    local turns, counted = nil, 0
    local found = redis.call('ZRANGE', owner_jobs_key(token, other_owner), 0, budget - 1, 'WITHSCORES')
    for k = 1, #found, 2 do
      local other = redis.call('HMGET', job_key(found[k]), 'state', 'images', 'weight')
      budget = budget - 1
      if other[1] == 'queued' then
        if turns == nil then
          local weight = math.max(1, math.floor(tonumber(other[3]) or 1))
          turns = math.ceil(own_jobs * weight / my_weight)
          if tonumber(found[k + 1]) < mine then turns = turns + 1 end
        end
        if counted >= turns then break end
        counted = counted + 1
        jobs = jobs + 1
        images = images + tonumber(other[2])
      end
    end
  end
end
return {jobs, images}
"""

# KEYS: the engines set. Returns the live engines' JSON; forgets the expired ones.
_ENGINES = """
local live = {}
for _, worker in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local status = redis.call('GET', prefix .. ':engine:' .. worker)
  if status then table.insert(live, status) else redis.call('SREM', KEYS[1], worker) end
end
return live
"""


def _sync(value: T | Awaitable[T]) -> T:
    """redis-py types every command as maybe-awaitable; the synchronous client never returns an awaitable."""
    if isinstance(value, Awaitable):
        raise TypeError("the Redis queue needs the synchronous client")
    return value


def _entries(found: Sequence[tuple[object, dict[Any, Any] | None]] | None) -> list[tuple[str, dict[str, str]]]:
    """Stream entries as redis-py reads them (with decode_responses), typed."""
    return [(str(entry_id), {str(k): str(v) for k, v in (data or {}).items()}) for entry_id, data in found or []]


def _pairs(flat: Sequence[Any]) -> list[tuple[str, str]]:
    return [(str(flat[i]), str(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]


def _safe_url(url: str) -> tuple[str, list[str]]:
    """The URL with its credentials and query left out, for messages, and the secrets to scrub from others."""
    try:
        parts = urllib.parse.urlsplit(url)
        where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        secrets = [parts.password] if parts.password else []
        secrets += [value for name, value in urllib.parse.parse_qsl(parts.query) if name == "password" and value]
    except ValueError:
        return "an unreadable URL", []
    return where, [*secrets, *(urllib.parse.quote(secret, safe="") for secret in secrets)]


class RedisQueue:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "imagine",
        lease_seconds: float = 30.0,
        max_attempts: int = 3,
        poll_seconds: float = 0.1,
        prefer_loaded_for_seconds: float = 30.0,
        engine_ttl_seconds: float = 15.0,
    ) -> None:
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.poll_seconds = poll_seconds
        self.prefer_loaded_for_seconds = prefer_loaded_for_seconds
        self.engine_ttl_seconds = engine_ttl_seconds
        # While waiting for work, wake at least this often to notice leases that ran out (and stay well
        # under redis-py's 5 s socket timeout, which also bounds a blocking read).
        self._wake_seconds = min(2.0, max(poll_seconds, min(1.0, lease_seconds / 2)))
        self._where, self._secrets = _safe_url(url)
        with self._talking("connect"):
            try:
                self._redis = redis.Redis.from_url(url, decode_responses=True)
            except ValueError as error:  # a malformed URL
                raise redis.exceptions.RedisError(str(error)) from None
            self._redis.ping()
        self._submit = self._script(_SUBMIT)
        self._claim = self._script(_CLAIM)
        self._heartbeat = self._script(_HEARTBEAT)
        self._report = self._script(_REPORT)
        self._cancel = self._script(_CANCEL)
        self._release = self._script(_RELEASE)
        self._recover = self._script(_RECOVER)
        self._position = self._script(_POSITION)
        self._engines = self._script(_ENGINES)

    def _script(self, body: str) -> Script:
        return self._redis.register_script(_LUA_COMMON + body)

    def _run(self, script: Script, keys: Sequence[str], *args: object) -> Any:
        common = (self.prefix, GROUP, EVENTS_MAXLEN, EVENTS_TTL_SECONDS)
        return script(keys=list(keys), args=[*common, *(str(arg) for arg in args)])

    @contextmanager
    def _talking(self, what: str) -> Iterator[None]:
        try:
            yield
        except redis.exceptions.RedisError as error:
            message = str(error)
            for secret in self._secrets:
                message = message.replace(secret, "***")
            raise QueueError(f"The Redis queue at {self._where} could not {what}: {message}") from None

    # Key names.
    def _model_token(self, model: str) -> str:
        return urllib.parse.quote(model, safe="")

    def _stream(self, model: str) -> str:
        return f"{self.prefix}:jobs:{self._model_token(model)}"

    def _nudge(self, model: str) -> str:
        return f"{self.prefix}:nudge:{self._model_token(model)}"

    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _events_key(self, job_id: str) -> str:
        return f"{self.prefix}:events:{job_id}"

    # Producer side.
    def submit(self, job: Job) -> bool:
        with self._talking("queue a job"):
            keys = [self._job_key(job.id), self._stream(job.model), f"{self.prefix}:models"]
            added = self._run(
                self._submit,
                keys,
                job.id,
                job.to_json(),
                job.model,
                job.batch_key,
                job.spec.count,
                repr(time.time()),
                self._nudge(job.model),
                job.owner,
                fair.weight_of(job.weight),
                self._model_token(job.model),
            )
        return bool(added)

    def events(self, job_id: str, after: str | None = None) -> list[tuple[str, Event]]:
        with self._talking("read a job's events"):
            found = _sync(self._redis.xrange(self._events_key(job_id), min=f"({after}" if after else "-"))
        return [(entry_id, Event.from_json(data["event"])) for entry_id, data in _entries(found)]

    def position(self, job_id: str) -> QueuePosition | None:
        with self._talking("find a job's place"):
            found = self._run(self._position, [], job_id, POSITION_SCAN)
        if not found:
            return None
        return QueuePosition(jobs_ahead=int(found[0]), images_ahead=int(found[1]))

    def cancel(self, job_id: str) -> bool:
        event = Event(EventKind.CANCELLED, reason="cancelled before it started")
        with self._talking("cancel a job"):
            return bool(self._run(self._cancel, [], job_id, event.to_json()))

    def forget(self, job_id: str) -> None:
        with self._talking("forget a job"):
            self._redis.delete(self._job_key(job_id), self._events_key(job_id))

    # Consumer side.
    def claim(self, worker: str, *, models: Sequence[str], max_images: int, timeout: float) -> list[Job]:
        if worker == RELEASED:
            raise ValueError(f"{RELEASED!r} is reserved by the Redis queue; choose another worker name")
        names = list(dict.fromkeys(models))
        deadline = time.monotonic() + max(0.0, timeout)
        if not names:
            time.sleep(max(0.0, timeout))
            return []
        keys = [self._stream(model) for model in names] + [self._nudge(model) for model in names]
        dead_event = Event(EventKind.FAILED, reason=_DEAD_REASON).to_json()
        cancelled_event = Event(EventKind.CANCELLED, reason="cancelled").to_json()
        while True:
            with self._talking("claim jobs"):
                taken, waits = self._run(
                    self._claim,
                    keys,
                    worker,
                    RELEASED,
                    max(1, round(self.lease_seconds * 1000)),
                    self.max_attempts,
                    max_images,
                    max(0, round(self.prefer_loaded_for_seconds * 1000)),
                    f"{self.prefix}:dead",
                    _DEAD_REASON,
                    dead_event,
                    cancelled_event,
                    SCAN,
                    DEAD_MAXLEN,
                    *(self._model_token(model) for model in names),
                )
            jobs = self._read_jobs(worker, _pairs(taken))
            if jobs:
                return jobs
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if not taken:
                block_ms = max(1, math.ceil(min(remaining, self._wake_seconds) * 1000))
                with self._talking("wait for jobs"):
                    self._redis.xread(dict(_pairs(waits)), count=1, block=block_ms)

    def _read_jobs(self, worker: str, taken: list[tuple[str, str]]) -> list[Job]:
        jobs = []
        for job_id, body in taken:
            try:
                jobs.append(Job.from_json(body))
            except (ValueError, KeyError, TypeError) as error:
                self.finish(job_id, worker, Event(EventKind.FAILED, reason=f"The job could not be read: {error}"))
        return jobs

    def heartbeat(self, job_id: str, worker: str) -> bool:
        with self._talking("extend a lease"):
            return bool(self._run(self._heartbeat, [], job_id, worker))

    def cancel_requested(self, job_id: str) -> bool:
        with self._talking("read a job's cancel flag"):
            return _sync(self._redis.hget(self._job_key(job_id), "cancel")) == "1"

    def publish(self, job_id: str, worker: str, event: Event) -> bool:
        if event.terminal:
            raise ValueError("terminal events go through finish()")
        with self._talking("publish an event"):
            return bool(self._run(self._report, [], job_id, worker, event.to_json(), 0))

    def finish(self, job_id: str, worker: str, event: Event) -> bool:
        if not event.terminal:
            raise ValueError("finish() takes a terminal event")
        with self._talking("finish a job"):
            return bool(self._run(self._report, [], job_id, worker, event.to_json(), 1))

    def release(self, job_id: str, worker: str) -> None:
        with self._talking("hand a job back"):
            self._run(self._release, [], job_id, worker, RELEASED)

    def recover(self, worker: str) -> int:
        with self._talking("recover an engine's jobs"):
            models = sorted(str(model) for model in _sync(self._redis.smembers(f"{self.prefix}:models")))
            if not models:
                return 0
            keys = [self._stream(model) for model in models] + [self._nudge(model) for model in models]
            return int(self._run(self._recover, keys, worker, RELEASED))

    def dead_letters(self, limit: int = 100) -> list[tuple[str, str]]:
        with self._talking("read the dead letters"):
            found = _sync(self._redis.xrevrange(f"{self.prefix}:dead", count=limit))
        return [(data["job"], data["reason"]) for _, data in _entries(found)]

    def advertise(self, status: EngineStatus) -> None:
        ttl_ms = max(1, round(self.engine_ttl_seconds * 1000))
        with self._talking("advertise an engine"):
            pipe = self._redis.pipeline()
            pipe.set(f"{self.prefix}:engine:{status.worker}", json.dumps(dataclasses.asdict(status)), px=ttl_ms)
            pipe.sadd(f"{self.prefix}:engines", status.worker)
            pipe.execute()

    def engines(self) -> list[EngineStatus]:
        with self._talking("list engines"):
            found = self._run(self._engines, [f"{self.prefix}:engines"])
        statuses = [status for status in map(_engine_status, found) if status is not None]
        return sorted(statuses, key=lambda status: status.worker)

    def close(self) -> None:
        with self._talking("close"):
            self._redis.close()


def _engine_status(text: object) -> EngineStatus | None:
    """An advertised status; None for one this release cannot read (e.g. from a different version)."""
    try:
        data = json.loads(str(text))
        known = {field.name for field in dataclasses.fields(EngineStatus)}
        values: dict[str, Any] = {name: value for name, value in data.items() if name in known}
        for name in ("models_loaded", "models_served"):
            values[name] = tuple(values.get(name, ()))
        return EngineStatus(**values)
    except (ValueError, TypeError, AttributeError):
        return None
