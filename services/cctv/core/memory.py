"""The Redis memory bound: what the system can store at most, checked against Redis at start.

Redis runs with ``maxmemory`` and ``maxmemory-policy noeviction`` (the stack, ``cctv local``):
when it is full it refuses writes (ingest answers 503, the sender keeps the frame) instead of
evicting keys, which would lose accepted frames without a trace. Every stream and key family is
bounded, so the worst case is computable from the settings; each service computes it at start
and refuses to start, naming the variables, when it does not fit in Redis's ``maxmemory``.
The per-item sizes below are upper estimates; docs/configuration.md shows the formula.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from cctv.core.redisconn import REDIS_DOWN_ERRORS, connect_settings
from cctv.core.settings import CoreSettings, SettingsError

log = logging.getLogger("cctv.memory")

MIB = 1024 * 1024
#: per stored frame: the entry's own fields and the stream's node overhead, plus its line in
#: the frame index list (cctv:frameidx:{cam}, "<entry id> <seq>" and the list node)
ENTRY_OVERHEAD_B = 256 + 64
#: one result entry (dets JSON of a busy scene, ids, timings)
RESULT_B = 2048
#: one drop record (reason, epoch, and the ids and seqs of a skipped backlog)
DROP_B = 1024
#: one dedup key (cctv:seen:{cam}:{seq}) with its TTL
DEDUP_B = 128
#: one event: the stream entry, its record hash and its index entries
EVENT_B = 2048
#: tracker state per camera
TRACK_STATE_B = 64 * 1024
#: streams trimmed with MAXLEN ~ may run over by up to one node (stream-node-max-entries)
APPROX_SLACK = 100
#: drop streams are capped at ~10000 entries (core/scripts.py)
DROPS_MAXLEN = 10000
#: heartbeats, leases, counters, failover log, Redis's own structures
FIXED_B = 32 * MIB
#: allocator rounding and fragmentation on top of the data
ALLOCATOR_FACTOR = 1.1


@dataclass(frozen=True)
class WorstCase:
    """The worst-case Redis memory of a configuration, by part, in bytes."""

    cameras: int
    frames: int
    results: int
    drops: int
    dedup: int
    events: int
    fixed: int

    @property
    def total(self) -> int:
        """Everything, with the allocator's overhead."""
        data = self.frames + self.results + self.drops + self.dedup + self.events + self.fixed
        return int(data * ALLOCATOR_FACTOR)

    def explain(self, s: CoreSettings) -> str:
        """The sum in words, naming the variables."""
        src = "CCTV_CAMERAS" if s.cameras_strict else "CCTV_MAX_CAMERAS"
        return (f"{self.cameras} cameras ({src}) x CCTV_FRAMES_MAXLEN={s.frames_maxlen} x "
                f"CCTV_MAX_FRAME_BYTES={s.max_frame_bytes} = {self.frames / MIB:.0f} MiB of "
                f"frames, + {self.results / MIB:.0f} MiB of results (CCTV_DET_MAXLEN="
                f"{s.det_maxlen}), + {self.events / MIB:.0f} MiB of events "
                f"(CCTV_EVENTS_MAXLEN={s.events_maxlen}, CCTV_EVENTS_MAX_COUNT="
                f"{s.events_max_count}), + {(self.drops + self.dedup) / MIB:.0f} MiB of drop "
                f"records and dedup keys (CCTV_DEDUP_TTL_S={s.dedup_ttl_s}), + "
                f"{self.fixed / MIB:.0f} MiB fixed, x {ALLOCATOR_FACTOR} = "
                f"{self.total / MIB:.0f} MiB")


def worst_case(s: CoreSettings) -> WorstCase:
    """The most memory the streams and keys of ``s`` can hold in Redis."""
    cams = len(s.camera_tokens) if s.cameras_strict else s.max_cameras
    cams = max(cams, 1)
    frames = cams * s.frames_maxlen * (s.max_frame_bytes + ENTRY_OVERHEAD_B)
    results = cams * (s.det_maxlen + APPROX_SLACK) * RESULT_B + cams * TRACK_STATE_B
    drops = cams * (DROPS_MAXLEN + APPROX_SLACK) * DROP_B
    dedup = int(cams * s.camera_fps_limit * s.dedup_ttl_s * DEDUP_B)
    events = (s.events_maxlen + APPROX_SLACK + s.events_max_count) * EVENT_B
    return WorstCase(cams, frames, results, drops, dedup, events, FIXED_B)


def redis_limits(client: redis.Redis) -> tuple[int, str]:
    """Redis's ``maxmemory`` (0 = none) and ``maxmemory-policy``, from INFO (no CONFIG needed)."""
    info = client.info("memory")
    return int(info.get("maxmemory", 0)), str(info.get("maxmemory_policy", ""))


def check_memory_bound(s: CoreSettings, client: redis.Redis | None = None) -> WorstCase | None:
    """Raise :class:`SettingsError` when the worst case of ``s`` cannot fit in Redis, or Redis
    would evict keys when full. Returns the worst case, or None when Redis could not be asked
    (it is then checked by nobody: logged, and the service starts and reconnects as usual)."""
    wc = worst_case(s)
    own = client is None
    client = client or connect_settings(s, timeout_s=2.0, name="cctv-memory-check")
    try:
        maxmemory, policy = redis_limits(client)
    except (*REDIS_DOWN_ERRORS, redis.ResponseError) as exc:
        log.warning("Redis memory bound not checked (Redis not answering: %s); worst case %s",
                    exc, wc.explain(s))
        return None
    finally:
        if own:
            client.close()
    if maxmemory == 0:
        log.warning("Redis has no maxmemory: when memory runs out the kernel kills it. Set "
                    "maxmemory (at least %d MiB for %s) with maxmemory-policy noeviction",
                    wc.total // MIB + 1, wc.explain(s))
        return wc
    if policy != "noeviction":
        raise SettingsError(
            f"Redis maxmemory-policy is {policy!r}: when full it would evict streams and lose "
            "accepted frames without a trace; run redis-server with --maxmemory-policy "
            "noeviction")
    if wc.total > maxmemory:
        raise SettingsError(
            f"the worst case does not fit in Redis maxmemory ({maxmemory / MIB:.0f} MiB): "
            f"{wc.explain(s)}. Lower CCTV_FRAMES_MAXLEN or CCTV_MAX_FRAME_BYTES (or the other "
            "variables named), register fewer cameras, or give Redis more maxmemory")
    log.info("Redis memory bound: worst case %d MiB of maxmemory %d MiB",
             wc.total // MIB, maxmemory // MIB)
    return wc
