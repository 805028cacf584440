"""Capacity-aware leadership: the fastest warm replicas lead (a GPU replica before a CPU one).

Each replica measures its model's time per frame once it is warm (or takes
CCTV_INFERENCE_MS_PER_FRAME as given) and beats it with its device. A replica is *outclassed*
when another ready replica on another kind of device (or with a time set by hand) needs at most
CCTV_INFERENCE_HANDOVER_RATIO of its time per frame: it then hands its shards over to the faster
ones (a planned hand-over, tens of milliseconds; :mod:`cctv.inference.shards`) and takes a free
shard only when no faster replica does. A slower replica remains a valid standby: when the fast
one dies, it takes over on expiry as always. Two alike replicas (same kind of device, measured
times) never outclass each other: measurement noise decides nothing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

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


def outclassed(beats: list[dict], ratio: float) -> set[str]:
    """The ids of the replicas in ``beats`` (inference heartbeat fields: id, device,
    ms_per_frame, ms_source) for which another of them is comparable and needs at most
    ``ratio`` x their time per frame. The caller passes only replicas that may lead."""
    if ratio <= 0:
        return set()
    timed = []
    for b in beats:
        try:
            ms = float(b.get("ms_per_frame", ""))
        except ValueError:
            continue
        if ms > 0:
            timed.append((b, ms))
    return {a.get("id", "") for a, a_ms in timed
            if any(o is not a and comparable(a, o) and o_ms <= a_ms * ratio
                   for o, o_ms in timed)}
