"""The inference shards as Redis holds them: how many there are, each camera's shard and each
shard's lease. This is what ``cctv status``, the dashboard and the shard leaders read; the
replicas decide who leads what with :mod:`cctv.inference.shards`."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from cctv.core import keys


@dataclass(frozen=True)
class ShardLease:
    """One shard: its leader (None when nobody holds the lease), epoch, the lease's time
    left, and its cameras (None with one shard: every camera)."""

    shard: int
    leader: str | None
    epoch: int
    lease_ms_left: int
    cameras: tuple[str, ...] | None


def shard_count(raw: bytes | None) -> int:
    """The value of ``cctv:inference:shards`` as a count from 1 to :data:`keys.MAX_SHARDS`
    (1 when unset or not a number)."""
    try:
        count = int(raw or 1)
    except ValueError:
        return 1
    return max(1, min(count, keys.MAX_SHARDS))


def camera_shards(raw: dict[bytes, bytes], count: int) -> dict[str, int]:
    """``cctv:inference:camera_shards`` (as HGETALL returns it) decoded: camera -> shard, the
    entries that are not a shard of ``count`` left out."""
    out = {}
    for cam, k in raw.items():
        if k.isdigit() and int(k) < count:
            out[cam.decode(errors="replace")] = int(k)
    return out


def read_shards(client: redis.Redis) -> list[ShardLease]:
    """Every shard's lease and cameras, in two round trips."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.INFERENCE_SHARDS)
    pipe.hgetall(keys.INFERENCE_CAMERA_SHARDS)
    count_raw, cams_raw = pipe.execute()
    count = shard_count(count_raw)
    pipe = client.pipeline(transaction=False)
    for k in range(count):
        sk = keys.shard_keys(k)
        pipe.get(sk.lease)
        pipe.get(sk.epoch)
        pipe.pttl(sk.lease)
    got = pipe.execute()
    cams: dict[int, list[str]] = {}
    for cam, k in camera_shards(cams_raw, count).items():
        cams.setdefault(k, []).append(cam)
    out = []
    for k in range(count):
        leader, epoch, pttl = got[3 * k:3 * k + 3]
        try:
            epoch_n = int(epoch or 0)
        except ValueError:
            epoch_n = 0
        out.append(ShardLease(k, leader.decode(errors="replace") if leader else None, epoch_n,
                              max(0, int(pttl or 0)),
                              tuple(sorted(cams.get(k, []))) if count > 1 else None))
    return out


def warm_standbys(replicas: list[dict], shards: int, leader: str | None) -> list[dict]:
    """The replicas (inference heartbeats) standing by: with one shard, those beating
    ``standby`` other than ``leader``; with several, every ready replica when there are at
    least two (each stands by for the shards the others lead)."""
    if shards > 1:
        ready = [r for r in replicas if r.get("ready") == "1"]
        return ready if len(ready) > 1 else []
    return [r for r in replicas if r.get("id") != leader and r.get("role") == "standby"]
