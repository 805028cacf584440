"""The leader loop: read every camera's frames through the consumer group, detect, publish.

A prefetch thread (prefetch.py) reads and decodes the next frames while the model runs.
Live policy, per camera: only the newest frame is processed; older ones are acked as
``dropped_behind``, frames older than CCTV_MAX_FRAME_AGE_S as ``dropped_stale``, undecodable
ones as ``dropped_corrupt``. A large backlog is skipped in one server-side step (also counted,
with seqs). Every write goes through a fenced script, so the loop is the same whether or not a
standby exists: the lease only decides when it runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import redis
from prometheus_client import Counter, Gauge, Histogram

from cctv.core import keys
from cctv.core.entries import EntryError, FrameEntry, decode_frame, encode_result, seq_of
from cctv.core.jpeg import JpegError
from cctv.core.jpeg_decode import decode_jpeg
from cctv.core.logthrottle import LogThrottle
from cctv.core.scripts import Scripts, is_stale_error
from cctv.core.settings import CAMERA_NAME_RE, Settings
from cctv.inference.detector import Detector
from cctv.inference.prefetch import Prefetcher
from cctv.inference.tracking import Tracking

log = logging.getLogger("cctv.inference.worker")

PROCESSED = Counter("cctv_inference_frames_processed_total", "Frames detected", ["camera"])
DROPPED = Counter("cctv_inference_frames_dropped_total", "Frames dropped by the live policy",
                  ["camera", "reason"])
INFER_SECONDS = Histogram("cctv_inference_seconds", "Model time per frame",
                          buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0))
LAG_SECONDS = Gauge("cctv_inference_stream_lag_seconds", "Age of the last processed frame",
                    ["camera"])

READ_COUNT = 8  # new entries read per camera per round; a full read means a backlog


class NotLeader(Exception):
    """Raised when a fenced write is refused: this worker must step down."""


@dataclass
class Frame:
    """One frame entry read from a camera stream (validated by core.entries.decode_frame)."""

    camera: str
    entry: FrameEntry
    pick_us: int
    #: decoded BGR image, filled in by the prefetch thread
    image: np.ndarray | None = None
    #: the image as the detector's input (detector.prepare), filled in by the prefetch thread
    prepared: object | None = None

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def seq(self) -> str:
        return str(self.entry.seq)

    @property
    def jpeg(self) -> bytes:
        return self.entry.jpeg

    @property
    def id_ms(self) -> int:
        return self.entry.id_ms

    @property
    def ts_us(self) -> int:
        """Capture time (sender clock, µs)."""
        return self.entry.ts


@dataclass(frozen=True)
class BadEntry:
    """A stream entry that does not decode as a frame: dropped as corrupt by id."""

    camera: str
    id: str
    seq: str
    why: str


class RedisClock:
    """Redis server time as seen from here (stream ids carry server milliseconds)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client, self.offset_s, self._synced = client, 0.0, 0.0

    def now_ms(self) -> float:
        if time.monotonic() - self._synced > 5:
            before = time.time()
            sec, usec = self.client.time()
            after = time.time()
            self.offset_s = sec + usec / 1e6 - (before + after) / 2
            self._synced = time.monotonic()
        return (time.time() + self.offset_s) * 1000


class WorkerStats:
    """Recent throughput and lag, for heartbeats and logs."""

    def __init__(self) -> None:
        self._done: deque[float] = deque(maxlen=512)
        self.lag_ms = 0.0
        self.lock = threading.Lock()

    def processed(self, n: int, lag_ms: float) -> None:
        now = time.monotonic()
        with self.lock:
            self._done.extend([now] * n)
            self.lag_ms = lag_ms

    def fps(self) -> float:
        now = time.monotonic()
        with self.lock:
            recent = [t for t in self._done if now - t < 5.0]
        return len(recent) / 5.0


class LeaderLoop:
    """Runs while this worker holds the lease; all writes are fenced by ``epoch``."""

    def __init__(self, settings: Settings, client: redis.Redis, scripts: Scripts,
                 detector: Detector, worker_id: str, stats: WorkerStats | None = None) -> None:
        self.s, self.redis, self.scripts, self.detector = settings, client, scripts, detector
        self.worker_id = worker_id
        self.stats = stats or WorkerStats()
        self.clock = RedisClock(client)
        self.epoch = 0
        self._cameras: list[str] = []
        self._cameras_at = 0.0
        self._backlogged: set[str] = set()
        self._next_reclaim = 0.0
        self.bad_input = LogThrottle(log)
        # per-camera trackers of this leadership, restored from Redis on first use
        self.tracking = Tracking(settings, client)

    # ---- cameras -------------------------------------------------------------------------
    def cameras(self) -> list[str]:
        """Active cameras (refreshed every second), with their consumer groups ensured."""
        if time.monotonic() - self._cameras_at > 1.0:
            names = []
            for raw in self.redis.smembers(keys.CAMERAS_ACTIVE):
                name = raw.decode(errors="replace")
                if CAMERA_NAME_RE.fullmatch(name):
                    names.append(name)
                else:
                    self.bad_input.warning("_registry", "ignoring %r in %s: not a camera name",
                                           name[:80], keys.CAMERAS_ACTIVE)
            names.sort()
            for cam in set(names) - set(self._cameras):
                try:
                    self.redis.xgroup_create(keys.frames(cam), keys.INFER_GROUP, id="0",
                                             mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            self._cameras, self._cameras_at = names, time.monotonic()
        return self._cameras

    # ---- fenced writes -------------------------------------------------------------------
    def _fence_args(self) -> list[str | int]:
        return [self.worker_id, self.epoch]

    def drop(self, frames: list[Frame] | list[BadEntry], reason: str) -> int:
        """Ack ``frames`` as dropped for ``reason`` (counted and recorded with their seqs)."""
        if not frames:
            return 0
        cam = frames[0].camera
        try:
            n = self.scripts.drop_frames(
                keys=[keys.LEASE_INFERENCE, keys.EPOCH_INFERENCE, keys.frames(cam),
                      keys.stats(cam), keys.drops(cam)],
                args=[*self._fence_args(), reason, keys.INFER_GROUP, len(frames),
                      *[f.id for f in frames], *[f.seq for f in frames]])
        except redis.ResponseError as exc:
            if is_stale_error(exc):
                raise NotLeader(str(exc)) from None
            raise
        DROPPED.labels(cam, reason).inc(n)
        return int(n)

    def drop_corrupt(self, frame: Frame | BadEntry, why: str) -> None:
        """Ack one frame that cannot be decoded, letterboxed or detected as ``corrupt``
        (counted, recorded with its seq) and warn, at most once per camera per minute."""
        self.bad_input.warning(frame.camera, "camera %s: frame %s (seq %s) dropped as corrupt: "
                               "%s", frame.camera, frame.id, frame.seq or "?", why,
                               frame=frame.id, seq=frame.seq)
        self.drop([frame], "corrupt")

    def skip_backlog(self, cam: str) -> int:
        """Skip every undelivered frame of ``cam`` but the newest (counted as behind)."""
        try:
            n = self.scripts.skip_backlog(
                keys=[keys.LEASE_INFERENCE, keys.EPOCH_INFERENCE, keys.frames(cam),
                      keys.stats(cam), keys.drops(cam), keys.frame_index(cam)],
                args=[*self._fence_args(), keys.INFER_GROUP])
        except redis.ResponseError as exc:
            if is_stale_error(exc):
                raise NotLeader(str(exc)) from None
            raise
        if n:
            DROPPED.labels(cam, "behind").inc(n)
            log.info("camera %s: skipped a backlog of %d frames", cam, n,
                     extra={"camera": cam, "dropped": n})
        return int(n)

    def publish(self, results: list[tuple[Frame, list, float, int, int, int]]) -> None:
        """Write results (fenced) and ack their frames, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        model = self.detector.model_name
        for frame, dets, infer_ms, done_us, w, h in results:
            cam = frame.camera
            e = frame.entry
            fields = encode_result(frame=e.id, seq=e.seq, ts=e.ts, rx=e.rx, pick=frame.pick_us,
                                   done=done_us, w=w, h=h, late=e.late,
                                   dets=[d.to_json() for d in dets], epoch=self.epoch,
                                   worker=self.worker_id, model=model, infer_ms=infer_ms)
            self.scripts.publish_result(
                keys=[keys.LEASE_INFERENCE, keys.EPOCH_INFERENCE, keys.frames(cam),
                      keys.detections(cam), keys.stats(cam), keys.LEADER_LAST_RESULT,
                      keys.FAILOVERS],
                args=[*self._fence_args(), frame.id, self.s.det_maxlen, keys.INFER_GROUP,
                      *fields],
                client=pipe)
        self.tracking.queue_saves(pipe, self.worker_id, self.epoch)
        replies = pipe.execute(raise_on_error=False)
        for reply in replies[len(results):]:  # tracker state writes (fenced as well)
            if isinstance(reply, Exception):
                if is_stale_error(reply):
                    raise NotLeader(str(reply))
                raise reply
        for (frame, *_), reply in zip(results, replies[:len(results)], strict=True):
            if isinstance(reply, Exception):
                if is_stale_error(reply):
                    raise NotLeader(str(reply))
                raise reply
            if reply:
                PROCESSED.labels(frame.camera).inc()

    # ---- entries ---------------------------------------------------------------------------
    def frames_of(self, cam: str, entries: list, pick_us: int) -> list[Frame]:
        """The entries that decode as frames; the others are dropped as corrupt at once."""
        out = []
        for eid, fields in entries:
            if not fields:
                continue  # deleted while pending (XAUTOCLAIM reports those separately)
            try:
                out.append(Frame(cam, decode_frame(eid, fields, self.s.max_frame_bytes),
                                 pick_us))
            except EntryError as exc:
                entry_id = eid.decode(errors="replace") if isinstance(eid, bytes) else str(eid)
                self.drop_corrupt(BadEntry(cam, entry_id, seq_of(fields), "bad entry"),
                                  str(exc))
        return out

    def decode(self, frame: Frame) -> bool:
        """Decode (and letterbox, when the detector can) ``frame`` in place; a frame that
        fails is dropped as corrupt and False returned."""
        try:
            if frame.image is None:
                frame.image = decode_jpeg(frame.jpeg, self.s.frame_limits)
            prepare = getattr(self.detector, "prepare", None)
            if prepare is not None and frame.prepared is None:
                frame.prepared = prepare(frame.image)
            return True
        except JpegError as exc:
            why = str(exc)
        except Exception as exc:  # noqa: BLE001 - any letterbox failure is this frame's
            why = f"letterbox failed: {type(exc).__name__}: {exc}"
        frame.image = frame.prepared = None
        self.drop_corrupt(frame, why)
        return False

    # ---- take-over -----------------------------------------------------------------------
    def claim_pending(self, min_idle_ms: int) -> None:
        """Claim frames pending longer than ``min_idle_ms`` (0 at take-over: with the lease,
        every pending frame belongs to a dead or deposed leader); process the newest fresh one
        per camera, drop the rest (stale, or behind the newest) with their seqs."""
        now_ms = self.clock.now_ms()
        for cam in self.cameras():
            claimed: list[Frame] = []
            start = "0-0"
            while True:
                resp = self.redis.xautoclaim(keys.frames(cam), keys.INFER_GROUP, self.worker_id,
                                             min_idle_time=min_idle_ms, start_id=start,
                                             count=100)
                start = resp[0].decode() if isinstance(resp[0], bytes) else str(resp[0])
                claimed += self.frames_of(cam, resp[1], time.time_ns() // 1000)
                if len(resp) > 2 and resp[2]:
                    # ingest counts frames the cap trims while pending; these were removed
                    # around it (XDEL/XTRIM by hand), so there is no seq left to record
                    log.warning("camera %s: %d pending frames were deleted from the stream",
                                cam, len(resp[2]))
                if start == "0-0":
                    break
            if not claimed:
                continue
            max_age_ms = self.s.max_frame_age_s * 1000
            fresh = [f for f in claimed if now_ms - f.id_ms <= max_age_ms]
            stale = [f for f in claimed if now_ms - f.id_ms > max_age_ms]
            log.info("camera %s: claimed %d pending frames (%d fresh, %d stale)%s", cam,
                     len(claimed), len(fresh), len(stale),
                     "" if min_idle_ms == 0 else f" idle over {min_idle_ms} ms",
                     extra={"camera": cam, "epoch": self.epoch})
            self.drop(stale, "stale")
            if fresh:
                self.drop(fresh[:-1], "behind")
                self.process([fresh[-1]])

    def take_over_pending(self) -> None:
        """Claim frames a previous leader read but never finished; process fresh, drop stale."""
        self.claim_pending(0)

    def maybe_reclaim(self) -> None:
        """Every ``CCTV_PENDING_CLAIM_IDLE_S``/2: claim frames pending longer than that (read by
        a replica after it lost the lease: the read is not fenced, the ack is)."""
        if time.monotonic() < self._next_reclaim:
            return
        self._next_reclaim = time.monotonic() + self.s.pending_claim_idle_s / 2
        self.claim_pending(int(self.s.pending_claim_idle_s * 1000))

    # ---- the loop ------------------------------------------------------------------------
    def read(self) -> dict[str, list[Frame]]:
        """New frames per camera (blocks up to 100 ms when there are none)."""
        cams = self.cameras()
        if not cams:
            time.sleep(0.1)
            return {}
        for cam in list(self._backlogged):
            self.skip_backlog(cam)
        self._backlogged.clear()
        try:
            resp = self.redis.xreadgroup(keys.INFER_GROUP, self.worker_id,
                                         {keys.frames(c): ">" for c in cams},
                                         count=READ_COUNT, block=100)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the stream or its group (restart without persistence, manual
            # cleanup): forget the cached cameras so their groups are re-created.
            log.warning("consumer group missing (%s); re-creating", exc)
            self._cameras, self._cameras_at = [], 0.0
            return {}
        pick = time.time_ns() // 1000
        out: dict[str, list[Frame]] = {}
        for stream, entries in resp or []:
            cam = keys.camera_from_frames_key(stream.decode())
            out[cam] = self.frames_of(cam, entries, pick)
            if len(entries) >= READ_COUNT:
                self._backlogged.add(cam)
        return out

    def drop_stale(self, frames: list[Frame]) -> list[Frame]:
        """Drop (and count) frames older than CCTV_MAX_FRAME_AGE_S; return the others."""
        now_ms = self.clock.now_ms()
        max_age_ms = self.s.max_frame_age_s * 1000
        stale = [f for f in frames if now_ms - f.id_ms > max_age_ms]
        for f in stale:
            self.drop([f], "stale")
        return [f for f in frames if now_ms - f.id_ms <= max_age_ms]

    def _detect(self, frames: list[Frame]) -> list[tuple[Frame, list]]:
        """Detections of each frame; when the model fails on the batch, each frame alone, and
        a frame it fails on alone is dropped as corrupt."""
        inputs = [f.prepared if f.prepared is not None else f.image for f in frames]
        try:
            return list(zip(frames, self.detector.detect(inputs), strict=True))
        except Exception as exc:  # noqa: BLE001 - a model error must not end the loop
            if len(frames) == 1:
                self.drop_corrupt(frames[0], f"detection failed: {type(exc).__name__}: {exc}")
                return []
        out = []
        for f in frames:
            out += self._detect([f])
        return out

    def process(self, frames: list[Frame]) -> None:
        """Decode, detect and publish ``frames`` (at most one per camera)."""
        ok = [f for f in frames if self.decode(f)]
        if not ok:
            return
        started = time.perf_counter()
        detected = self._detect(ok)
        if not detected:
            return
        infer_ms = (time.perf_counter() - started) * 1000 / len(detected)
        for _ in detected:
            INFER_SECONDS.observe(infer_ms / 1000)
        tracked = []
        for f, d in detected:
            try:
                tracked.append((f, self.tracking.track(f.camera, d, f.ts_us, f.image)))
            except (redis.RedisError, NotLeader):
                raise  # not the frame's fault: the loop's own handling applies
            except Exception as exc:  # noqa: BLE001 - the frame costs a drop, not the leader
                self.drop_corrupt(f, f"tracking failed: {type(exc).__name__}: {exc}")
        if not tracked:
            return
        done_us = time.time_ns() // 1000
        self.publish([(f, d, infer_ms, done_us, f.image.shape[1], f.image.shape[0])
                      for f, d in tracked])
        now_ms = self.clock.now_ms()
        lag = max(now_ms - f.id_ms for f, _ in tracked)
        for f, _ in tracked:
            LAG_SECONDS.labels(f.camera).set((now_ms - f.id_ms) / 1000)
        self.stats.processed(len(tracked), lag)

    def run(self, epoch: int, held: Callable[[], bool], stop: threading.Event) -> str:
        """Lead until the lease is lost or ``stop`` is set; returns why it ended."""
        self.epoch = epoch
        self._cameras_at = 0.0
        self._next_reclaim = time.monotonic() + self.s.pending_claim_idle_s / 2
        try:
            self.take_over_pending()
            prefetch = Prefetcher(self, held).start()
            try:
                while not stop.is_set():
                    if not held():
                        return "lease lost"
                    chosen = self.drop_stale(prefetch.take())
                    if held():
                        self.maybe_reclaim()
                    if not chosen:
                        continue
                    if not held():
                        return "lease lost"
                    self.process(chosen)
            finally:
                prefetch.stop()
        except NotLeader as exc:
            log.warning("write refused by fencing, stepping down: %s", exc,
                        extra={"epoch": epoch})
            return "fenced"
        return "stopped"
