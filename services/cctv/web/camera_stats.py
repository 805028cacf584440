"""Per-camera live figures, sampled from Redis once a second by one thread per web process.

Rates (frames in, processed, skipped, rejected per second) are differences of the cluster-wide
counters in ``cctv:stats:{cam}`` over a 5 s window; the stream length, consumer-group lag and
pending count come from the frames stream, the time of the last frame from the camera's rate
limiter (written by ingest on every frame), and latencies from the newest results. Pages, the
API, the event streams and /metrics all read the same snapshot: no viewer causes Redis work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import redis

from cctv.core import keys
from cctv.core.redisconn import REDIS_DOWN_ERRORS
from cctv.core.registry import active_cameras
from cctv.web.results import good_results

log = logging.getLogger("cctv.web.stats")

DROP_REASONS = ("dropped_behind", "dropped_stale", "dropped_corrupt", "dropped_evicted")
WINDOW_S = 5.0
#: lag must have grown by this many entries over the window, and be at least this, to alert
LAG_GROWTH_ALERT = 5


@dataclass
class _Sample:
    t: float
    counters: dict[str, int]
    lag: int | None


@dataclass
class _History:
    samples: deque[_Sample] = field(default_factory=lambda: deque(maxlen=64))

    def window_start(self, now: float) -> _Sample | None:
        """The oldest sample no older than the window (at least one second back)."""
        best = None
        for s in self.samples:
            if now - s.t <= WINDOW_S + 0.5 and now - s.t >= 0.9:
                best = s
                break
        return best


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def _group_info(groups: object) -> dict:
    if not isinstance(groups, list):
        return {}
    for g in groups:
        name = g.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == keys.INFER_GROUP:
            return g
    return {}


class CameraStats:
    """The sampler (a daemon thread) and its latest per-camera snapshot."""

    def __init__(self, client: redis.Redis, silent_s: float, interval_s: float = 1.0) -> None:
        self.redis, self.silent_s, self.interval_s = client, silent_s, interval_s
        self._lock = threading.Lock()
        self._history: dict[str, _History] = {}
        self._snapshot: dict[str, dict] = {}
        self.updated = 0.0
        self.error: str | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> CameraStats:
        """Start sampling every ``interval_s`` (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="camera-stats")
            self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                self.sample()
                self.error = None
            except REDIS_DOWN_ERRORS as exc:
                self.error = f"redis unavailable: {exc}"
            except redis.RedisError as exc:
                log.warning("camera stats sample failed: %s", exc)
                self.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a bad value in Redis must not stop it
                log.exception("camera stats sample failed")
                self.error = f"sample failed: {type(exc).__name__}"
            time.sleep(self.interval_s)

    def snapshot(self) -> dict[str, dict]:
        """camera -> figures (see :meth:`sample`), from the last sample."""
        with self._lock:
            return dict(self._snapshot)

    def camera(self, name: str) -> dict | None:
        """The figures of one camera, or None when it never sent a frame."""
        with self._lock:
            return self._snapshot.get(name)

    def sample(self) -> dict[str, dict]:
        """Read every camera's counters and streams in one round trip and update the snapshot."""
        cams = active_cameras(self.redis)
        pipe = self.redis.pipeline(transaction=False)
        pipe.time()
        for cam in cams:
            pipe.hgetall(keys.stats(cam))
            pipe.xlen(keys.frames(cam))
            pipe.xinfo_groups(keys.frames(cam))
            pipe.hget(keys.ratelimit(cam), "ts")
            pipe.xrevrange(keys.detections(cam), count=10)
        replies = pipe.execute(raise_on_error=False)
        if isinstance(replies[0], Exception):
            raise replies[0]
        sec, usec = replies[0]
        now_s = sec + usec / 1e6
        mono = time.monotonic()
        out: dict[str, dict] = {}
        for i, cam in enumerate(cams):
            stats, xlen, groups, last_ts, dets = replies[1 + 5 * i: 6 + 5 * i]
            counters = ({k.decode(): _int(v) for k, v in stats.items()}
                        if isinstance(stats, dict) else {})
            out[cam] = self._figures(cam, mono, now_s, counters,
                                     xlen if isinstance(xlen, int) else 0,
                                     _group_info(groups), last_ts,
                                     dets if isinstance(dets, list) else [])
        with self._lock:
            for gone in set(self._history) - set(cams):
                del self._history[gone]
            self._snapshot = out
            self.updated = time.time()
        return out

    def _figures(self, cam: str, mono: float, now_s: float, counters: dict[str, int],
                 xlen: int, group: dict, last_ts: object, dets: list) -> dict:
        lag = group.get("lag")
        lag = int(lag) if isinstance(lag, int) else None
        hist = self._history.setdefault(cam, _History())
        base = hist.window_start(mono)
        hist.samples.append(_Sample(mono, counters, lag))

        def rate(*names: str) -> float:
            if base is None:
                return 0.0
            dt = max(mono - base.t, 1e-3)
            diff = sum(counters.get(n, 0) - base.counters.get(n, 0) for n in names)
            return round(max(diff, 0) / dt, 2)

        last_frame_age = None
        if last_ts is not None:
            try:
                last_frame_age = round(max(0.0, now_s - float(last_ts)), 2)
            except (TypeError, ValueError):
                last_frame_age = None
        results = good_results(cam, dets)
        recent = [r for r in results
                  if now_s * 1000 - _int(str(r["id"]).split("-", 1)[0]) <= WINDOW_S * 1000]
        cap = [r["latency_ms"]["capture_to_result"] for r in recent
               if r["latency_ms"]["capture_to_result"] is not None]
        ing = [r["latency_ms"]["ingest_to_result"] for r in recent
               if r["latency_ms"]["ingest_to_result"] is not None]
        infer = [r["infer_ms"] for r in recent if isinstance(r.get("infer_ms"), float)]
        last_result_age = None
        if results:
            last_result_age = round(max(0.0, now_s - _int(results[0]["id"].split("-")[0])
                                        / 1000), 2)
        growth = None
        if base is not None and base.lag is not None and lag is not None:
            growth = lag - base.lag
        silent = last_frame_age is None or last_frame_age > self.silent_s
        lag_growing = (lag is not None and growth is not None and lag >= LAG_GROWTH_ALERT
                       and growth >= LAG_GROWTH_ALERT)
        no_results = (not silent and counters.get("accepted", 0) > 0
                      and (last_result_age is None or last_result_age > self.silent_s))
        if lag is None and group and no_results:
            # Redis cannot tell the lag once unread entries were trimmed (the cap evicts
            # them): frames keep coming and nothing reads them, so it is growing
            lag_growing = True
        status = ("silent" if silent else "lagging" if lag_growing
                  else "no_results" if no_results else "ok")
        drops = {r.removeprefix("dropped_"): counters.get(r, 0) for r in DROP_REASONS}
        return {
            "camera": cam,
            "status": status,
            "fps_in": rate("accepted"),
            "fps_processed": rate("processed"),
            "fps_skipped": rate(*DROP_REASONS),
            "fps_rejected": rate("rejected_rate"),
            "latency_ms": {
                "capture_to_result": round(sum(cap) / len(cap), 1) if cap else None,
                "ingest_to_result": round(sum(ing) / len(ing), 1) if ing else None,
                "inference": round(sum(infer) / len(infer), 1) if infer else None,
            },
            "stream_length": xlen,
            "consumer_lag": lag,
            "lag_growth": growth,
            "pending": _int(group.get("pending")) if group else None,
            "last_frame_age_s": last_frame_age,
            "last_result_age_s": last_result_age,
            "silent": silent,
            "lag_growing": lag_growing,
            "counters": {
                "accepted": counters.get("accepted", 0),
                "accepted_late": counters.get("accepted_late", 0),
                "duplicate": counters.get("duplicate", 0),
                "rejected_rate": counters.get("rejected_rate", 0),
                "processed": counters.get("processed", 0),
                "dropped": sum(drops.values()),
            },
            "drops": drops,
        }
