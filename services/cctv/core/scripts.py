"""Server-side Lua scripts: every multi-step change to Redis state happens atomically here.

* ``INGEST``: dedupe on (camera, seq), per-camera token bucket, exact stream cap with counted
  eviction of frames no consumer has read, then XADD.
* ``PUBLISH_RESULT`` / ``DROP_FRAMES`` / ``SKIP_BACKLOG`` / ``SAVE_TRACK_STATE``: the only ways
  inference writes; each is built by :func:`fenced` from the one :data:`FENCE` (lease owner and
  epoch), so a deposed leader cannot publish, ack or save anything.
* ``LEASE_*``: acquire (SET NX PX + INCR epoch), compare-and-extend, compare-and-delete.
* ``CAPTURE_ACQUIRE`` / ``CAPTURE_RELEASE``: a capture instance's lease on one camera: taking it
  also moves the camera's capture floor above every seq an earlier holder used (``INGEST``
  refuses seqs below the floor); renewal is ``LEASE_RENEW``.
* ``EMIT_EVENT``: the events service's record, indexes and stream entry in one step.
* ``SET_CLIP``: an event's clip file, recorded only while the event is still stored.
"""

from __future__ import annotations

import redis

# Compare two stream ids "ms-seq"; true when a > b.
_ID_GT = """
local function id_gt(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am ~= bm then return am > bm end
  return as > bs
end
local function field(entry_fields, name)
  for i = 1, #entry_fields, 2 do
    if entry_fields[i] == name then return entry_fields[i + 1] end
  end
  return nil
end
local function group_last_delivered(stream, group)
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
  if not ok then return nil end
  for _, g in ipairs(groups) do
    local name, last = nil, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == group then return last end
  end
  return nil
end
"""

# KEYS: frames, stats, dedup, ratelimit, cameras_active, drops, frame_index, cameras_removed,
#       capture_floor
# ARGV: camera, seq, late, maxlen, dedup_ttl, rate, burst, group, <entry fields...>
#       (the fields as core.entries.encode_frame gives them)
# Returns {status, id}: ok / dup (id of the first copy) / rate / removed (the camera was removed
# from the registry) / fenced (seq below the capture floor: from a capture instance that lost
# the camera to another).
INGEST = _ID_GT + """
local frames, stats, dedup, rl, active, drops, index =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
if redis.call('HEXISTS', KEYS[8], ARGV[1]) == 1 then return {'removed', ''} end
local prev = redis.call('GET', dedup)
if prev then
  redis.call('HINCRBY', stats, 'duplicate', 1)
  return {'dup', prev}
end
local floor = tonumber(redis.call('GET', KEYS[9]) or '0') or 0
if tonumber(ARGV[2]) < floor then
  redis.call('HINCRBY', stats, 'rejected_fenced', 1)
  return {'fenced', ''}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate, burst = tonumber(ARGV[6]), tonumber(ARGV[7])
local b = redis.call('HMGET', rl, 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local last = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
if tokens < 1 then
  redis.call('HSET', rl, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', rl, 60000)
  redis.call('HINCRBY', stats, 'rejected_rate', 1)
  return {'rate', ''}
end
redis.call('HSET', rl, 'tokens', tostring(tokens - 1), 'ts', tostring(now))
redis.call('PEXPIRE', rl, 60000)
local group = ARGV[8]
if redis.call('EXISTS', frames) == 0 then
  redis.call('DEL', index)
  redis.pcall('XGROUP', 'CREATE', frames, group, '0', 'MKSTREAM')
end
redis.call('SADD', active, ARGV[1])
local maxlen = tonumber(ARGV[4])
local len = redis.call('XLEN', frames)
if len >= maxlen then
  -- Exact cap: trim the oldest entries ourselves so that frames no consumer has read yet, and
  -- frames read but never acked (a leader died with them), are counted with their seqs
  -- instead of vanishing in an approximate trim. (This reads the entries it trims, usually
  -- one: entries written around ingest have no index entry, so the index cannot say which.)
  local delivered = group_last_delivered(frames, group) or '0-0'
  local ids, seqs, pending = {}, {}, {}
  local old = redis.call('XRANGE', frames, '-', '+', 'COUNT', len - maxlen + 1)
  for _, e in ipairs(old) do
    local unread = id_gt(e[1], delivered)
    local pend = not unread and #redis.call('XPENDING', frames, group, e[1], e[1], 1) > 0
    if unread or pend then
      local seq = field(e[2], 'seq') or ''
      if not string.match(seq, '^%d+$') or #seq > 19 then seq = '' end
      ids[#ids + 1], seqs[#seqs + 1] = e[1], seq
      if pend then pending[#pending + 1] = e[1] end
    end
  end
  redis.call('XTRIM', frames, 'MAXLEN', maxlen - 1)
  -- the index follows: drop its entries up to the last trimmed id
  local last_trimmed = old[#old][1]
  while true do
    local head = redis.call('LINDEX', index, 0)
    if not head then break end
    local id = string.match(head, '^(%S+) ')
    if id and id_gt(id, last_trimmed) then break end
    redis.call('LPOP', index)
  end
  if #pending > 0 then redis.call('XACK', frames, group, unpack(pending)) end
  if #ids > 0 then
    redis.call('HINCRBY', stats, 'dropped_evicted', #ids)
    redis.call('XADD', drops, 'MAXLEN', '~', 10000, '*', 'reason', 'evicted',
      'ids', table.concat(ids, ','), 'seqs', table.concat(seqs, ','),
      'epoch', '', 'worker', 'ingest')
  end
end
local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', frames, '*', unpack(fields))
redis.call('RPUSH', index, id .. ' ' .. ARGV[2])
redis.call('SET', dedup, id, 'EX', tonumber(ARGV[5]))
redis.call('HINCRBY', stats, 'accepted', 1)
if ARGV[3] == '1' then redis.call('HINCRBY', stats, 'accepted_late', 1) end
return {'ok', id}
"""

# The fence every write of the inference leader starts with, written only here: KEYS[1] is the
# lease, KEYS[2] the epoch counter, ARGV[1] the replica's id, ARGV[2] its epoch. Unless the
# lease holds this replica's id and the epoch is its epoch, the script writes nothing and
# replies the error STALE (is_stale_error), on which the replica steps down.
FENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return redis.error_reply('STALE fenced: not the current leader/epoch')
end
"""


def fenced(body: str, *helpers: str) -> str:
    """A fenced script: the ``helpers`` (Lua function definitions), :data:`FENCE`, ``body``.

    ``body`` runs only past the fence, with the fence's KEYS[1..2] and ARGV[1..2]."""
    return "".join(helpers) + FENCE + body


# KEYS: lease, epoch, frames, det, stats, leader_last (of the shard), failovers
# ARGV: worker, epoch, frame_id, det_maxlen, group, shard, field1, value1, ...
# Returns the det entry id, 0 when the frame was no longer pending (already handled),
# or the error STALE (the fence).
PUBLISH_RESULT = fenced("""
if redis.call('XACK', KEYS[3], ARGV[5], ARGV[3]) == 0 then return 0 end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', tonumber(ARGV[4]), '*', unpack(fields))
redis.call('HINCRBY', KEYS[5], 'processed', 1)
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prev = redis.call('HMGET', KEYS[6], 'epoch', 'worker', 'ms')
if prev[1] and prev[1] ~= ARGV[2] then
  -- first result of a new epoch: record the measured gap since the old leader's last result
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', 1000, '*', 'event', 'first_result',
    'epoch', ARGV[2], 'shard', ARGV[6], 'new', ARGV[1], 'old', prev[2] or '',
    'old_epoch', prev[1],
    'gap_ms', tostring(now_ms - tonumber(prev[3])), 'time_ms', tostring(now_ms))
end
redis.call('HSET', KEYS[6], 'epoch', ARGV[2], 'worker', ARGV[1], 'ms', tostring(now_ms))
return id
""")

# KEYS: lease, epoch, frames, stats, drops
# ARGV: worker, epoch, reason, group, n, id1..idn, seq1..seqn
# Acks the ids that are still pending, counts them as dropped_<reason>, records them.
DROP_FRAMES = fenced("""
local n = tonumber(ARGV[5])
local ids, seqs = {}, {}
for i = 1, n do
  if redis.call('XACK', KEYS[3], ARGV[4], ARGV[5 + i]) == 1 then
    ids[#ids + 1] = ARGV[5 + i]
    seqs[#seqs + 1] = ARGV[5 + n + i]
  end
end
if #ids > 0 then
  redis.call('HINCRBY', KEYS[4], 'dropped_' .. ARGV[3], #ids)
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', 10000, '*', 'reason', ARGV[3],
    'ids', table.concat(ids, ','), 'seqs', table.concat(seqs, ','), 'epoch', ARGV[2],
    'worker', ARGV[1])
end
return #ids
""")

# KEYS: lease, epoch, frames, stats, drops, frame_index
# ARGV: worker, epoch, group
# Leaves only the newest undelivered frame for the group to read: every older undelivered frame
# is skipped (XGROUP SETID) and counted as dropped_behind with its seq. Returns the count.
# Ids and seqs come from the index list ingest keeps beside the stream: no JPEG payload is
# copied into the script. (Entries written around ingest are not in the index; they are read
# normally when newer than the newest indexed frame, else passed over with the skipped ones.)
SKIP_BACKLOG = fenced("""
local last = group_last_delivered(KEYS[3], ARGV[3])
if not last then return 0 end
local ids, seqs = {}, {}
local items = redis.call('LRANGE', KEYS[6], 0, -1)
for i = #items, 1, -1 do  -- newest first, stop at the first delivered one
  local id, seq = string.match(items[i], '^(%S+) (%S*)$')
  if id then
    if not id_gt(id, last) then break end
    ids[#ids + 1], seqs[#seqs + 1] = id, seq
  end
end
if #ids <= 1 then return 0 end
-- ids[1] is the newest: keep it; skip the others (oldest first in the record)
local skip_ids, skip_seqs = {}, {}
for i = #ids, 2, -1 do
  skip_ids[#skip_ids + 1], skip_seqs[#skip_seqs + 1] = ids[i], seqs[i]
end
redis.call('XGROUP', 'SETID', KEYS[3], ARGV[3], ids[2])
redis.call('HINCRBY', KEYS[4], 'dropped_behind', #skip_ids)
redis.call('XADD', KEYS[5], 'MAXLEN', '~', 10000, '*', 'reason', 'behind',
  'ids', table.concat(skip_ids, ','), 'seqs', table.concat(skip_seqs, ','), 'epoch', ARGV[2],
  'worker', ARGV[1])
return #skip_ids
""", _ID_GT)

# KEYS: lease, epoch, track_state   ARGV: worker, epoch, ttl_ms, blob
# Writes the leader's tracker state of one camera (cctv.inference.trackstate); returns 1.
SAVE_TRACK_STATE = fenced("""
redis.call('SET', KEYS[3], ARGV[4], 'PX', tonumber(ARGV[3]))
return 1
""")

# KEYS: lease, epoch, holder_info
# ARGV: worker, ttl_ms
# Returns {epoch, previous_holder, reason} when acquired, or {} when the lease is held.
LEASE_ACQUIRE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then return {} end
local epoch = redis.call('INCR', KEYS[2])
local prev = redis.call('HMGET', KEYS[3], 'worker', 'released')
local reason = 'initial'
if prev[1] then
  if prev[2] == '1' then reason = 'released' else reason = 'expired' end
end
redis.call('HSET', KEYS[3], 'worker', ARGV[1], 'released', '0', 'epoch', epoch)
return {epoch, prev[1] or '', reason}
"""

# KEYS: lease  ARGV: worker, ttl_ms   -> 1 renewed, 0 not ours
LEASE_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
"""

# KEYS: lease, holder_info, channel  ARGV: worker  -> 1 released, 0 not ours
LEASE_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'released', '1')
  redis.call('PUBLISH', KEYS[3], ARGV[1])
  return 1
end
return 0
"""


#: the capture floor of a camera is its epoch times this: each holder's seqs start there, so
#: ten billion frames per take-over (over 10 years at 30 fps) before they would reach the next
CAPTURE_SEQ_SPAN = 10_000_000_000

# KEYS: capture_lease, capture_epoch, capture_floor   ARGV: instance, ttl_ms
# Returns {epoch, floor} when acquired, {} when another instance holds the lease. The floor is
# the epoch followed by ten zeros (epoch * CAPTURE_SEQ_SPAN, written as a string: exact past
# what Lua's number formatting prints), and only ever grows, as the epoch does.
CAPTURE_ACQUIRE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then return {} end
local epoch = redis.call('INCR', KEYS[2])
local floor = tostring(epoch) .. '0000000000'
redis.call('SET', KEYS[3], floor)
return {epoch, floor}
"""

# KEYS: capture_lease  ARGV: instance  -> 1 released, 0 not ours
CAPTURE_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS: event hash, events stream, stats, index-keys set, index zsets...
# ARGV: kind (start|end|instant), id, score, maxlen, camera, rule, record json, snapshot, crop
# Returns 1 when written, 0 when it was already (a replay).
EMIT_EVENT = """
local status = redis.call('HGET', KEYS[1], 'status')
local kind = ARGV[1]
if kind == 'end' then
  if status ~= 'open' then return 0 end
elseif status then
  return 0
end
local idx = {}
local known = {}
local prev = redis.call('HGET', KEYS[1], 'idx')
if prev then
  for k in string.gmatch(prev, '[^\\n]+') do idx[#idx + 1] = k; known[k] = true end
end
for i = 5, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[3], ARGV[2])
  redis.call('SADD', KEYS[4], KEYS[i])
  if not known[KEYS[i]] then idx[#idx + 1] = KEYS[i]; known[KEYS[i]] = true end
end
local new_status = 'closed'
if kind == 'start' then new_status = 'open' end
redis.call('HSET', KEYS[1], 'json', ARGV[7], 'status', new_status, 'camera', ARGV[5],
  'snapshot', ARGV[8], 'crop', ARGV[9], 'idx', table.concat(idx, '\\n'))
local type = 'event.start'
if kind == 'end' then type = 'event.end' elseif kind == 'instant' then type = 'event' end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', tonumber(ARGV[4]), '*', 'type', type, 'id', ARGV[2],
  'camera', ARGV[5], 'rule', ARGV[6], 'event', ARGV[7])
if kind == 'end' then
  redis.call('HINCRBY', KEYS[3], 'ended', 1)
else
  redis.call('HINCRBY', KEYS[3], 'emitted', 1)
  redis.call('HINCRBY', KEYS[3], 'emitted:' .. ARGV[5] .. ':' .. ARGV[6], 1)
end
return 1
"""


class Scripts:
    """The scripts registered on one Redis client (EVALSHA with automatic reload)."""

    def __init__(self, client: redis.Redis) -> None:
        self.ingest = client.register_script(INGEST)
        self.publish_result = client.register_script(PUBLISH_RESULT)
        self.drop_frames = client.register_script(DROP_FRAMES)
        self.skip_backlog = client.register_script(SKIP_BACKLOG)
        self.save_track_state = client.register_script(SAVE_TRACK_STATE)
        self.lease_acquire = client.register_script(LEASE_ACQUIRE)
        self.lease_renew = client.register_script(LEASE_RENEW)
        self.lease_release = client.register_script(LEASE_RELEASE)
        self.capture_acquire = client.register_script(CAPTURE_ACQUIRE)
        self.capture_release = client.register_script(CAPTURE_RELEASE)
        self.record_redis_primary = client.register_script(RECORD_REDIS_PRIMARY)


def is_stale_error(exc: BaseException) -> bool:
    """True when ``exc`` is the refusal of :data:`FENCE` (any fenced script)."""
    return isinstance(exc, redis.ResponseError) and "STALE" in str(exc)

# KEYS: event hash; ARGV: clip path. Returns 1 when set, 0 when the event is gone.
SET_CLIP = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'clip', ARGV[1])
return 1
"""

# KEYS: the primary record (hash), the failovers stream; ARGV: run_id, address, time (ms).
# Notes the Redis primary; when its run_id changed since the last note, one redis_primary entry
# goes to the failovers stream (reason failover: another address; restart: the same one).
# Returns 1 when a change was recorded, else 0.
RECORD_REDIS_PRIMARY = """
local prev = redis.call('HMGET', KEYS[1], 'run_id', 'addr')
if prev[1] == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'run_id', ARGV[1], 'addr', ARGV[2], 'since_ms', ARGV[3])
if not prev[1] then return 0 end
local reason = 'restart'
if prev[2] ~= ARGV[2] then reason = 'failover' end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000, '*', 'event', 'redis_primary',
  'old', prev[2] or '', 'new', ARGV[2], 'reason', reason, 'time_ms', ARGV[3])
return 1
"""
