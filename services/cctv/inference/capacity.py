"""Capacity-aware leadership: the fastest warm replica leads (a GPU replica before a CPU one).

Each replica measures its model's time per frame once it is warm (or takes
CCTV_INFERENCE_MS_PER_FRAME as given) and beats it with its device. While leading, a replica
looks at the standbys' heartbeats every few seconds; when a ready standby on another kind of
device (or with a time set by hand) needs at most CCTV_INFERENCE_HANDOVER_RATIO of its own
time per frame, the leader names it in ``cctv:lease:inference:prefer`` and releases the lease:
a planned hand-over, like a SIGTERM, tens of milliseconds. Standbys other than the named one do
not take the lease while the name stands (it expires after three lease TTLs, so a preferred
replica that dies in between delays a take-over by that much at most). A slower replica
remains a valid standby: when the fast one dies, it takes over on expiry as always. Two alike
replicas (same kind of device, measured times) never swap: measurement noise decides nothing.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
import redis

from cctv.core import keys
from cctv.core.heartbeat import read_beats
from cctv.core.redisconn import REDIS_DOWN_ERRORS

log = logging.getLogger("cctv.inference.capacity")

#: a standby's heartbeat older than this is not considered for a hand-over
FRESH_BEAT_S = 3.0


def measure_ms_per_frame(detect: Callable[[list[np.ndarray]], object], runs: int = 5,
                         shape: tuple[int, int, int] = (480, 640, 3)) -> float:
    """The median time of ``runs`` model calls on one frame, in ms (after the warm-up)."""
    frame = np.full(shape, 114, dtype=np.uint8)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        detect([frame])
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def device_kind(device: str) -> str:
    """``gpu`` for a CUDA device (``cuda:0``, ``0``), else ``cpu``."""
    return "gpu" if device.startswith("cuda") or device.isdigit() else "cpu"


def comparable(own: dict, other: dict) -> bool:
    """Whether two replicas' times per frame may decide leadership: they run on different
    kinds of device (a GPU and a CPU replica), or either time was set by hand
    (CCTV_INFERENCE_MS_PER_FRAME). Two alike replicas never swap on measurement noise."""
    return (device_kind(own.get("device", "")) != device_kind(other.get("device", ""))
            or "set" in (own.get("ms_source"), other.get("ms_source")))


def preferred_standby(own: dict, beats: list[dict], ratio: float, now: float) -> str | None:
    """The id of the fastest fresh, ready, comparable standby taking at most ``ratio`` x the
    leader's time per frame, or None. ``own`` and ``beats`` are inference heartbeat fields
    (decoded: id, role, ready, beat, device, ms_per_frame, ms_source)."""
    try:
        own_ms = float(own.get("ms_per_frame", ""))
    except ValueError:
        return None
    if ratio <= 0 or own_ms <= 0:
        return None
    best, best_ms = None, own_ms * ratio
    for b in beats:
        try:
            ms, beat = float(b.get("ms_per_frame", "")), float(b.get("beat", ""))
        except ValueError:
            continue
        if (b.get("id") == own.get("id") or b.get("role") != "standby"
                or b.get("ready") != "1" or b.get("may_lead", "1") != "1"
                or now - beat > FRESH_BEAT_S or ms <= 0 or not comparable(own, b)):
            continue
        if ms <= best_ms:
            best, best_ms = b.get("id"), ms
    return best


class HandoverWatch:
    """While leading: every ``every_s`` looks for a much faster standby; when one is found,
    :attr:`target` names it and :attr:`due` is set (the leader loop then ends)."""

    def __init__(self, client: redis.Redis, own: dict, ratio: float,
                 every_s: float = 2.0) -> None:
        self.redis, self.own, self.ratio = client, own, ratio
        self.every_s = every_s
        self.due = threading.Event()
        self.target: str | None = None
        self._stop = threading.Event()

    def start(self) -> HandoverWatch:
        """Watch in a daemon thread (nothing to do when hand-overs are off)."""
        if self.ratio > 0:
            threading.Thread(target=self._run, name="handover-watch", daemon=True).start()
        return self

    def check(self) -> str | None:
        """One look; returns (and records) the standby to hand over to, if any."""
        now = time.time()
        target = preferred_standby(self.own, read_beats(self.redis, "inference", FRESH_BEAT_S,
                                                        now), self.ratio, now)
        if target:
            self.target = target
            self.due.set()
        return target

    def _run(self) -> None:
        while not self._stop.wait(self.every_s) and not self.due.is_set():
            try:
                if self.check():
                    log.info("standby %s is much faster (see its ms_per_frame); handing the "
                             "lease over to it", self.target)
            except (*REDIS_DOWN_ERRORS, redis.ResponseError) as exc:
                log.debug("hand-over check skipped: %s", exc)

    def stop(self) -> None:
        """End the watch."""
        self._stop.set()


def name_successor(client: redis.Redis, target: str, ttl_ms: int) -> None:
    """Write ``cctv:lease:inference:prefer`` = ``target`` (before releasing the lease)."""
    client.set(keys.LEASE_PREFER, target, px=3 * ttl_ms)


def someone_else_preferred(client: redis.Redis, own_id: str) -> bool:
    """True while another replica is named to take the lease next."""
    raw = client.get(keys.LEASE_PREFER)
    return raw is not None and raw.decode(errors="replace") != own_id
