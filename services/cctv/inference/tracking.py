"""Multi-object tracking in the inference leader: one ByteTrack per camera
(:mod:`cctv.inference.bytetrack`, numpy only, no torch), fed with our detector's boxes, its
state saved in Redis so that ids survive a failover.

* ``CCTV_TRACKER``: ``auto`` and ``bytetrack`` track with ByteTrack, ``botsort`` with
  BoT-SORT's motion model, ``none`` turns tracking off. The only dependency is ``lap`` (the
  linear assignment, in every inference image): without it ``auto`` logs once that it does not
  track and the explicit names refuse to start.
* Frames reach the tracker with gaps (the live policy skips frames, a take-over skips about a
  second). The Kalman filter advances one step per update, so before each update the tracks
  coast ``round(gap / usual gap) - 1`` extra prediction steps, and lost-track expiry counts
  those steps too: a car keeps its id across a one-second hand-over.
* State: after every ``CCTV_TRACK_STATE_EVERY`` processed frames the tracker is encoded
  (:mod:`cctv.inference.trackstate`: JSON and float64 arrays, versioned, no pickle) and written
  by a fenced script (lease owner and epoch checked, like every result) in the same round trip
  as the results, so a deposed leader cannot overwrite it. A new leader loads it before the
  camera's first frame; a value that does not validate starts a fresh tracker, counted in
  ``cctv_inference_track_state_rejected_total`` and logged. A tracker update that fails (it
  should not; the state is validated) also starts a fresh tracker, counted, rather than
  stopping the leader.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import statistics
import time
from collections import deque

import numpy as np
import redis
from prometheus_client import Counter, Histogram

from cctv.core import keys
from cctv.inference import trackstate
from cctv.inference.bytetrack import ByteTracker
from cctv.inference.detector import Detection
from cctv.inference.records import TrackState
from cctv.inference.settings import InferenceSettings

log = logging.getLogger("cctv.inference.tracking")

TRACK_SECONDS = Histogram("cctv_inference_tracking_seconds", "Tracker update time per frame",
                          buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05))
STATE_REJECTED = Counter("cctv_inference_track_state_rejected_total",
                         "Saved tracker states that did not validate (a fresh tracker was "
                         "started), by reason", ["reason"])
TRACKER_RESETS = Counter("cctv_inference_tracker_resets_total",
                         "Trackers replaced by a fresh one after an update failed")
for _reason in ("too_large", "format", "version", "kind", "values"):
    STATE_REJECTED.labels(_reason)

#: a camera's saved tracker expires when the camera has sent nothing for this long
STATE_TTL_MS = 3600 * 1000
#: most prediction steps a gap is bridged with (a longer gap coasts this many)
MAX_COAST_STEPS = 60


class TrackingUnavailable(RuntimeError):
    """CCTV_TRACKER names a tracker that cannot run here (``lap`` is not installed)."""


def tracker_available() -> bool:
    """True when the tracker's one dependency (``lap``, the linear assignment) is installed."""
    return importlib.util.find_spec("lap") is not None


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
            log.warning("CCTV_TRACKER=auto: the package lap is not installed here, detections "
                        "carry no track ids (pip install lap)")
            _warned = True
        return "none"
    raise TrackingUnavailable(f"CCTV_TRACKER={name} needs the package lap, which is not "
                              "installed here; install it or set CCTV_TRACKER=none")


def warm_tracker(settings: InferenceSettings) -> str:
    """Resolve ``CCTV_TRACKER`` at replica start and, when tracking, run the tracker once with
    a state round trip, so that a take-over finds everything imported. Raises
    :class:`TrackingUnavailable`."""
    kind = resolve_tracker(settings.tracker)
    if kind == "none":
        return kind
    started = time.perf_counter()
    ct = CameraTracker("warmup", ByteTracker(kind, settings.track_buffer))
    for i in range(2):
        ct.update([Detection(0, "warmup", 0.9, (10 + i, 10, 50 + i, 50))], i * 100_000, None)
    ct.load_state(ct.dumps())
    log.info("tracker %s ready in %.2f s", kind, time.perf_counter() - started)
    return kind


@dataclasses.dataclass
class CameraTracker:
    """One camera's tracker and the frame timing used to bridge gaps."""

    camera: str
    tracker: ByteTracker
    last_ts_us: int | None = None
    gaps_us: deque = dataclasses.field(default_factory=lambda: deque(maxlen=15))
    updates: int = 0

    @property
    def kind(self) -> str:
        return self.tracker.kind

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

    def update(self, dets: list[Detection], ts_us: int, image: np.ndarray | None) -> list[
            Detection]:
        """Track ``dets`` of the frame captured at ``ts_us``; returns them with track ids.
        (``image`` is unused: the cameras are fixed, no motion compensation or ReID.)"""
        steps = self.steps_for(ts_us)
        if steps > 1:
            self.tracker.coast(steps - 1)
        self.last_ts_us = ts_us if self.last_ts_us is None else max(self.last_ts_us, ts_us)
        ids = self.tracker.update(np.array([d.xyxy for d in dets], np.float32).reshape(-1, 4),
                                  np.array([d.conf for d in dets], np.float32),
                                  np.array([d.cls for d in dets], np.int64))
        self.updates += 1
        return [dataclasses.replace(d, track=ids.get(i)) for i, d in enumerate(dets)]

    def dumps(self) -> bytes:
        """The tracker state as bytes (:func:`cctv.inference.trackstate.encode`)."""
        return trackstate.encode(self.tracker, self.last_ts_us, list(self.gaps_us))

    def load_state(self, blob: bytes) -> None:
        """Restore a state written by :meth:`dumps` (same tracker kind); raises
        :class:`cctv.inference.trackstate.BadTrackState` and changes nothing when it does not
        validate."""
        saved = trackstate.decode(blob, self.kind, self.tracker.max_lost)
        self.tracker = saved.tracker
        self.last_ts_us = saved.last_ts_us
        self.gaps_us.clear()
        self.gaps_us.extend(saved.gaps_us)

    def ids_after(self, last_id: int) -> None:
        """Never hand out an id at or below ``last_id``: a fresh tracker, or a state saved a
        few frames before the newest result (``CCTV_TRACK_STATE_EVERY`` > 1, a lost write),
        must not reuse the id of a track it does not know."""
        self.tracker.next_id = max(self.tracker.next_id, last_id + 1)


#: results a fresh tracker reads back for the highest id handed out (once per camera and
#: leadership; ~100 s of results at 10 fps)
FRESH_ID_SCAN = 1000


def _last_track_id(client: redis.Redis, camera: str, count: int = 1) -> int:
    """The highest track id in the camera's newest ``count`` results (0 when there is none).
    Entries that are not what the leader writes count as none: they are read from Redis."""
    best = 0
    for _id, fields in client.xrevrange(keys.detections(camera), count=count):
        try:
            dets = json.loads(fields.get(b"dets", b"[]"))
        except (ValueError, RecursionError):
            continue
        if type(dets) is not list:
            continue
        for d in dets:
            t = d.get("track") if type(d) is dict else None
            # far below the state's bound, so the ids that follow stay valid in it
            if type(t) is int and best < t <= trackstate.MAX_INT // 2:
                best = t
    return best


class Tracking:
    """Every camera's tracker in one leadership; created by the leader loop, its states saved
    by the fenced publisher (:meth:`due_states`)."""

    def __init__(self, settings: InferenceSettings, client: redis.Redis) -> None:
        self.kind = resolve_tracker(settings.tracker)
        self.buffer, self.every = settings.track_buffer, settings.track_state_every
        self.redis = client
        self.cameras: dict[str, CameraTracker] = {}
        self._dirty: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    def camera(self, camera: str) -> CameraTracker:
        """The camera's tracker; on first use, restored from Redis (a take-over) or new."""
        ct = self.cameras.get(camera)
        if ct is not None:
            return ct
        ct = CameraTracker(camera, ByteTracker(self.kind, self.buffer))
        restored = False
        blob = self.redis.get(keys.track_state(camera))
        if blob:
            started = time.perf_counter()
            try:
                ct.load_state(blob)
                restored = True
                log.info("camera %s: tracker state restored (%d tracks, %d bytes, %.1f ms)",
                         camera, len(ct.tracker.tracked) + len(ct.tracker.lost), len(blob),
                         (time.perf_counter() - started) * 1000, extra={"camera": camera})
            except trackstate.BadTrackState as exc:
                STATE_REJECTED.labels(exc.reason).inc()
                log.warning("camera %s: saved tracker state rejected (%s); starting a fresh "
                            "tracker", camera, exc, extra={"camera": camera,
                                                           "reason": exc.reason})
        # a restored state is at most a few frames older than the newest result; a fresh
        # tracker must look further back for the ids already handed out
        ct.ids_after(_last_track_id(self.redis, camera, 1 if restored else FRESH_ID_SCAN))
        self.cameras[camera] = ct
        return ct

    def track(self, camera: str, dets: list[Detection], ts_us: int,
              image: np.ndarray | None) -> list[Detection]:
        """``dets`` with track ids (unchanged when tracking is off)."""
        if not self.enabled:
            return dets
        ct = self.camera(camera)
        started = time.perf_counter()
        try:
            out = ct.update(dets, ts_us, image)
        except Exception:  # noqa: BLE001 - a tracker bug must cost ids, not the leader
            TRACKER_RESETS.inc()
            log.exception("camera %s: tracker update failed; this frame goes untracked and "
                          "a fresh tracker takes over", camera, extra={"camera": camera})
            fresh = CameraTracker(camera, ByteTracker(self.kind, self.buffer))
            fresh.ids_after(max(ct.tracker.next_id - 1,
                                _last_track_id(self.redis, camera, FRESH_ID_SCAN)))
            self.cameras[camera] = fresh
            self._dirty.add(camera)
            return dets
        TRACK_SECONDS.observe(time.perf_counter() - started)
        if ct.updates % self.every == 0:
            self._dirty.add(camera)
        return out

    def due_states(self) -> list[TrackState]:
        """The state of every camera due for a save, by camera name, each once (the fenced
        publisher writes them with the results)."""
        due = [TrackState(camera, self.cameras[camera].dumps(), STATE_TTL_MS)
               for camera in sorted(self._dirty)]
        self._dirty.clear()
        return due
