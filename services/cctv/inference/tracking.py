"""Multi-object tracking in the inference leader: ultralytics' ByteTrack or BoT-SORT, fed with
our detector's boxes, one tracker per camera, its state saved in Redis so that ids survive a
failover.

* The trackers are ultralytics' own classes (``ultralytics.trackers``); nothing here associates
  boxes. They import torch, so tracking needs the full inference image: ``CCTV_TRACKER=auto``
  tracks when ultralytics is installed and logs once that it does not when it is not (the lean
  OpenVINO-only CPU image), ``bytetrack``/``botsort`` insist, ``none`` turns it off.
* Frames reach the tracker with gaps (the live policy skips frames, a take-over skips about a
  second). The Kalman filter of these trackers advances one step per update, so before each
  update the tracks coast ``round(gap / usual gap) - 1`` extra prediction steps, and lost-track
  expiry counts those steps too: a car keeps its id across a one-second hand-over.
* State: after every ``CCTV_TRACK_STATE_EVERY`` processed frames the tracker is pickled and
  written by a fenced script (lease owner and epoch checked, like every result) in the same
  round trip as the results, so a deposed leader cannot overwrite it. A new leader loads it
  before the camera's first frame. It is read back with an allow-list unpickler (ultralytics'
  tracker classes, numpy arrays, the id counter): Redis content never gets to run code.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import logging
import pickle
import statistics
import sys
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import redis
from prometheus_client import Histogram

from cctv.core import keys
from cctv.core.settings import Settings
from cctv.inference.detector import Detection

log = logging.getLogger("cctv.inference.tracking")

TRACK_SECONDS = Histogram("cctv_inference_tracking_seconds", "Tracker update time per frame",
                          buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05))

STATE_VERSION = 1
#: a camera's saved tracker expires when the camera has sent nothing for this long
STATE_TTL_MS = 3600 * 1000
#: most prediction steps a gap is bridged with (a longer gap coasts this many)
MAX_COAST_STEPS = 60

# KEYS: lease, epoch, track_state   ARGV: worker, epoch, ttl_ms, blob
# Writes the tracker state only while this worker holds the lease with this epoch.
SAVE_TRACK_STATE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return redis.error_reply('STALE fenced: not the current leader/epoch')
end
redis.call('SET', KEYS[3], ARGV[4], 'PX', tonumber(ARGV[3]))
return 1
"""


class TrackingUnavailable(RuntimeError):
    """CCTV_TRACKER names a tracker that cannot be loaded here (ultralytics/torch missing)."""


def tracker_available() -> bool:
    """True when ultralytics (and torch, which its trackers import) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("ultralytics", "torch"))


_warned = False


def resolve_tracker(name: str) -> str:
    """The tracker to run for setting ``name``: bytetrack, botsort or none."""
    global _warned
    if name == "none":
        return "none"
    if tracker_available():
        return "bytetrack" if name == "auto" else name
    if name == "auto":
        if not _warned:
            log.warning("CCTV_TRACKER=auto: ultralytics/torch are not installed in this image, "
                        "detections carry no track ids (use the full inference image to track)")
            _warned = True
        return "none"
    raise TrackingUnavailable(f"CCTV_TRACKER={name} needs ultralytics and torch, which are not "
                              "installed here; use the full inference image or CCTV_TRACKER=none")


def warm_tracker(settings: Settings) -> str:
    """Resolve ``CCTV_TRACKER`` at replica start and, when tracking, import the tracker and run
    it once with a state round trip: a take-over must not pay the import of ultralytics and
    torch (seconds on a small CPU). Raises :class:`TrackingUnavailable`."""
    kind = resolve_tracker(settings.tracker)
    if kind == "none":
        return kind
    started = time.perf_counter()
    ct = CameraTracker("warmup", kind, _new_tracker(kind, settings.track_buffer))
    for i in range(2):
        ct.update([Detection(0, "warmup", 0.9, (10 + i, 10, 50 + i, 50))], i * 100_000, None)
    ct.load_state(ct.dumps())
    log.info("tracker %s ready in %.2f s", kind, time.perf_counter() - started)
    return kind


class Boxes:
    """The results-like view ultralytics' trackers read: ``conf``, ``cls``, ``xywh``, ``xyxy``,
    ``len()`` and boolean-mask indexing."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xyxy, self.conf, self.cls = xyxy, conf, cls

    @classmethod
    def from_detections(cls, dets: list[Detection]) -> Boxes:
        """Boxes of ``dets`` in their order (the tracker reports each match by this index)."""
        if not dets:
            return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                       np.zeros(0, np.float32))
        return cls(np.array([d.xyxy for d in dets], np.float32),
                   np.array([d.conf for d in dets], np.float32),
                   np.array([d.cls for d in dets], np.float32))

    @property
    def xywh(self) -> np.ndarray:
        out = self.xyxy.copy()
        out[:, 2:] = self.xyxy[:, 2:] - self.xyxy[:, :2]
        out[:, :2] = self.xyxy[:, :2] + out[:, 2:] / 2
        return out

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, mask: Any) -> Boxes:
        return Boxes(self.xyxy[mask], self.conf[mask], self.cls[mask])


def _tracker_args(kind: str, buffer: int) -> SimpleNamespace:
    """ultralytics' packaged defaults for ``kind``, for fixed CCTV cameras."""
    import ultralytics
    import yaml

    cfg = Path(ultralytics.__file__).parent / "cfg" / "trackers" / f"{kind}.yaml"
    args = yaml.safe_load(cfg.read_text())
    args["track_buffer"] = buffer
    if kind == "botsort":
        # fixed cameras: no global motion compensation (it costs an optical flow per frame)
        # and no ReID model (none can be downloaded; detector features are not exposed here)
        args.update(gmc_method="none", with_reid=False)
    return SimpleNamespace(**args)


def _new_tracker(kind: str, buffer: int) -> Any:
    if kind == "botsort":
        from ultralytics.trackers.bot_sort import BOTSORT

        return BOTSORT(_tracker_args(kind, buffer))
    from ultralytics.trackers.byte_tracker import BYTETracker

    return BYTETracker(_tracker_args(kind, buffer))


# ---- state (de)serialization ---------------------------------------------------------------
# Attributes that are rebuilt from the settings instead of saved: the config, the motion
# compensation and ReID objects (BoT-SORT), and the removed-track history (only the current
# frame's removals matter to the tracker; the history grows to 1000 tracks).
_NOT_SAVED = ("args", "gmc", "encoder", "removed_stracks", "removed_stracks_frame")

_SAFE_GLOBALS = {
    ("builtins", "range"), ("builtins", "iter"), ("collections", "deque"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class _StateUnpickler(pickle.Unpickler):
    """Loads only ultralytics tracker classes, numpy arrays and the id counter (a range
    iterator): no callable that could run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module.startswith("ultralytics.trackers."):
            obj = super().find_class(module, name)
            # only classes the trackers define (not what their modules import)
            if isinstance(obj, type) and obj.__module__.startswith("ultralytics.trackers."):
                return obj
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in tracker state")


@dataclasses.dataclass
class CameraTracker:
    """One camera's tracker and the frame timing used to bridge gaps."""

    camera: str
    kind: str
    tracker: Any
    last_ts_us: int | None = None
    gaps_us: deque = dataclasses.field(default_factory=lambda: deque(maxlen=15))
    updates: int = 0

    def steps_for(self, ts_us: int) -> int:
        """Prediction steps from the last update to ``ts_us`` (1 for a usual gap)."""
        if self.last_ts_us is None:
            return 1
        gap = ts_us - self.last_ts_us
        if gap <= 0:
            return 1
        usual = statistics.median(self.gaps_us) if self.gaps_us else gap
        if gap < 5_000_000:  # a take-over or stall is not a usual gap
            self.gaps_us.append(gap)
        return max(1, min(MAX_COAST_STEPS, round(gap / max(usual, 1))))

    def coast(self, steps: int) -> None:
        """Advance every confirmed and lost track ``steps`` Kalman steps without detections."""
        t = self.tracker
        pool = [s for s in t.tracked_stracks if s.is_activated] + list(t.lost_stracks)
        for _ in range(steps):
            t.multi_predict(pool)
        t.frame_id += steps

    def update(self, dets: list[Detection], ts_us: int, image: np.ndarray | None) -> list[
            Detection]:
        """Track ``dets`` of the frame captured at ``ts_us``; returns them with track ids."""
        steps = self.steps_for(ts_us)
        if steps > 1:
            self.coast(steps - 1)
        self.last_ts_us = ts_us if self.last_ts_us is None else max(self.last_ts_us, ts_us)
        out = self.tracker.update(Boxes.from_detections(dets), image)
        self.updates += 1
        ids = {int(row[-1]): int(row[-4]) for row in out}  # detection index -> track id
        return [dataclasses.replace(d, track=ids.get(i)) for i, d in enumerate(dets)]

    def _tracks(self) -> list:
        return list(self.tracker.tracked_stracks) + list(self.tracker.lost_stracks)

    def dumps(self) -> bytes:
        """The tracker state as bytes (see :func:`load_state`)."""
        state = {k: v for k, v in self.tracker.__dict__.items() if k not in _NOT_SAVED}
        # each track holds a bound ``next`` of the tracker's id counter: saved once, as the
        # counter itself, and re-bound on load
        bound = [(t, t.__dict__.pop("next_id")) for t in self._tracks() if "next_id" in t.__dict__]
        try:
            return pickle.dumps({"v": STATE_VERSION, "kind": self.kind, "tracker": state,
                                 "last_ts_us": self.last_ts_us, "gaps_us": list(self.gaps_us)},
                                protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            for t, fn in bound:
                t.next_id = fn

    def load_state(self, blob: bytes) -> None:
        """Restore a state written by :meth:`dumps` (same tracker kind)."""
        data = _StateUnpickler(io.BytesIO(blob)).load()
        if not isinstance(data, dict) or data.get("v") != STATE_VERSION:
            raise ValueError("unknown tracker state version")
        if data.get("kind") != self.kind:
            raise ValueError(f"saved by a {data.get('kind')} tracker, this one is {self.kind}")
        self.tracker.__dict__.update(data["tracker"])
        self.tracker.removed_stracks = []
        for t in self._tracks():
            t.next_id = self.tracker._ids.__next__
        self.last_ts_us = data["last_ts_us"]
        self.gaps_us.extend(data["gaps_us"])

    def ids_after(self, last_id: int) -> None:
        """Never hand out an id at or below ``last_id``: a fresh tracker, or a state saved a
        few frames before the newest result (``CCTV_TRACK_STATE_EVERY`` > 1, a lost write),
        must not reuse the id of a track it does not know."""
        nxt = next(self.tracker._ids)
        self.tracker._ids = iter(range(max(nxt, last_id + 1), sys.maxsize))
        for t in self._tracks():
            t.next_id = self.tracker._ids.__next__


def _last_track_id(client: redis.Redis, camera: str) -> int:
    """The highest track id in the camera's newest result (0 when there is none)."""
    import json

    entries = client.xrevrange(keys.detections(camera), count=1)
    if not entries:
        return 0
    try:
        dets = json.loads(entries[0][1].get(b"dets", b"[]"))
        return max((int(d["track"]) for d in dets if d.get("track") is not None), default=0)
    except (ValueError, TypeError, KeyError):
        return 0


class Tracking:
    """Every camera's tracker in one leadership; created by the leader loop."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.kind = resolve_tracker(settings.tracker)
        self.buffer, self.every = settings.track_buffer, settings.track_state_every
        self.redis = client
        self.cameras: dict[str, CameraTracker] = {}
        self._save = client.register_script(SAVE_TRACK_STATE)
        self._dirty: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    def camera(self, camera: str) -> CameraTracker:
        """The camera's tracker; on first use, restored from Redis (a take-over) or new."""
        ct = self.cameras.get(camera)
        if ct is not None:
            return ct
        ct = CameraTracker(camera, self.kind, _new_tracker(self.kind, self.buffer))
        blob = self.redis.get(keys.track_state(camera))
        if blob:
            started = time.perf_counter()
            try:
                ct.load_state(blob)
                log.info("camera %s: tracker state restored (%d tracks, %d bytes, %.1f ms)",
                         camera, len(ct.tracker.tracked_stracks) + len(ct.tracker.lost_stracks),
                         len(blob), (time.perf_counter() - started) * 1000,
                         extra={"camera": camera})
            except (pickle.UnpicklingError, ValueError, TypeError, KeyError, AttributeError,
                    EOFError) as exc:
                log.warning("camera %s: saved tracker state unusable (%s); starting fresh",
                            camera, exc, extra={"camera": camera})
                ct = CameraTracker(camera, self.kind, _new_tracker(self.kind, self.buffer))
        ct.ids_after(_last_track_id(self.redis, camera))
        self.cameras[camera] = ct
        return ct

    def track(self, camera: str, dets: list[Detection], ts_us: int,
              image: np.ndarray | None) -> list[Detection]:
        """``dets`` with track ids (unchanged when tracking is off)."""
        if not self.enabled:
            return dets
        ct = self.camera(camera)
        started = time.perf_counter()
        out = ct.update(dets, ts_us, image)
        TRACK_SECONDS.observe(time.perf_counter() - started)
        if ct.updates % self.every == 0:
            self._dirty.add(camera)
        return out

    def queue_saves(self, pipe: redis.client.Pipeline, worker: str, epoch: int) -> int:
        """Add a fenced state write per camera due for one to ``pipe``; returns how many."""
        n = 0
        for camera in sorted(self._dirty):
            ct = self.cameras[camera]
            self._save(keys=[keys.LEASE_INFERENCE, keys.EPOCH_INFERENCE,
                             keys.track_state(camera)],
                       args=[worker, epoch, STATE_TTL_MS, ct.dumps()], client=pipe)
            n += 1
        self._dirty.clear()
        return n
