"""Live frames per camera, encoded once and shared by every viewer.

One :class:`CameraFeed` per camera, mode and web process. The annotated feed follows the
camera's detection stream, fetches the frame each result refers to, draws the boxes, encodes the
JPEG once and wakes all waiting viewers. The live view never freezes: when the newest frame is
more than ``CCTV_WEB_DETECTION_PAUSED_S`` newer than the frame of the last result (detection
down, a take-over in progress, a model slower than the camera), the feed shows the raw frames
as they arrive with a "detection paused" band, and goes back to annotated frames with the next
result. The clean feed (``?clean=1``) shows the raw frames only. A feed stops by itself when
nobody has watched for ``CCTV_VIEWER_IDLE_S``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from prometheus_client import Counter, Gauge

from cctv.core import keys
from cctv.core.annotate import annotate_or_raise, banner_jpeg
from cctv.core.entries import EntryError, ResultEntry, decode_frame, decode_result
from cctv.core.jpeg import FrameLimits, JpegError
from cctv.core.logthrottle import LogThrottle
from cctv.core.mjpeg import mjpeg_part
from cctv.core.redisconn import REDIS_DOWN_ERRORS, Backoff
from cctv.web.results import result_dict

log = logging.getLogger("cctv.web.feed")

ENCODED = Counter("cctv_web_frames_encoded_total", "Annotated frames encoded", ["camera"])
UNDRAWABLE = Counter("cctv_web_frames_undrawable_total",
                     "Results whose entry or frame does not decode or draw (skipped)", ["camera"])
VIEWERS = Gauge("cctv_web_viewers", "Open MJPEG viewers", ["camera"])
PAUSED = Counter("cctv_web_detection_paused_total",
                 "Times a live view fell back to raw frames because results stopped", ["camera"])
#: the band drawn on raw frames while results are missing
PAUSED_TEXT = "detection paused"
#: a silent camera's last frame is sent again this often (see CameraFeed.frames)
REPEAT_AFTER_S = 2.0
#: multipart boundary of the MJPEG streams
@dataclass(frozen=True)
class AnnotatedFrame:
    """One annotated, encoded frame and the result it shows."""

    number: int
    jpeg: bytes
    result: dict
    #: ``jpeg`` as an MJPEG part, built once and written as-is to every viewer
    part: bytes = b""
    #: a raw frame: detection is paused (annotated feed) or the clean feed
    raw: bool = False


class CameraFeed:
    """Follows one camera's results and keeps the latest annotated JPEG."""

    def __init__(self, client: redis.Redis, camera: str, quality: int, idle_s: float,
                 limits: FrameLimits | None = None, max_frame_bytes: int = 8 * 1024 * 1024,
                 *, clean: bool = False, paused_after_s: float = 0.8) -> None:
        self.redis, self.camera, self.quality, self.idle_s = client, camera, quality, idle_s
        self.limits, self.max_frame_bytes = limits or FrameLimits(), max_frame_bytes
        self.clean, self.paused_after_s = clean, paused_after_s
        #: showing raw frames because results stopped (annotated feed only)
        self.paused = False
        self._result_frame_ms = 0  # frame time of the last result shown
        self._result_at = 0.0  # when it was shown (monotonic)
        #: how far results usually trail the newest frame (ms, moving average): a model slower
        #: than the bound (a loaded CPU) must not flip the view to raw frames between results
        self._usual_lag_ms = 0.0
        self._fresh_result = False
        self._warn = LogThrottle(log)
        self._cond = threading.Condition()
        self._latest: AnnotatedFrame | None = None
        self._viewers = 0
        self._last_viewer = time.monotonic()
        self._thread: threading.Thread | None = None

    @property
    def latest(self) -> AnnotatedFrame | None:
        return self._latest

    def ensure_running(self) -> None:
        with self._cond:
            self._last_viewer = time.monotonic()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"feed-{self.camera}")
                self._thread.start()

    def _annotate(self, result: ResultEntry) -> bytes | None:
        entries = self.redis.xrange(keys.frames(self.camera), result.frame, result.frame,
                                    count=1)
        if not entries:
            return None  # trimmed already
        jpeg = entries[0][1].get(b"jpeg")
        if not isinstance(jpeg, bytes) or len(jpeg) > self.max_frame_bytes:
            raise EntryError("the frame entry has no JPEG of an acceptable size")
        return annotate_or_raise(jpeg, result.dets_json(), self.quality, self.limits)

    def _run(self) -> None:
        results, frames = keys.detections(self.camera), keys.frames(self.camera)
        last = {results: "$", frames: "$"}
        backoff = Backoff()
        # Start from the newest existing result (or frame) so a new viewer sees a picture at
        # once.
        try:
            newest = [] if self.clean else self.redis.xrevrange(results, count=1)
            if newest:
                last[results] = newest[0][0].decode()
                self._publish(newest[0][1], last[results])
            self._check_paused(last)
        except REDIS_DOWN_ERRORS:
            pass
        while True:
            with self._cond:
                idle = self._viewers == 0 and time.monotonic() - self._last_viewer > self.idle_s
                if idle:
                    self._thread = None
                    return
            # raw frames are read only while they are shown: a healthy annotated feed reads
            # results (and one frame per result) and nothing more
            streams = {frames: last[frames]} if self.clean else \
                {results: last[results], **({frames: last[frames]} if self.paused else {})}
            # results late: look again soon, so the picture pauses within the bound
            late = time.monotonic() - self._result_at > self.paused_after_s / 2
            block = 100 if late and not self.paused and not self.clean else 500
            try:
                resp = self.redis.xread(streams, count=16, block=block)
                backoff.reset()
                got = {name.decode(): entries for name, entries in resp or []}
                if got.get(results):
                    last[results] = got[results][-1][0].decode()
                    self._publish(got[results][-1][1], last[results])  # newest: live
                    if got.get(frames):
                        last[frames] = got[frames][-1][0].decode()
                elif got.get(frames):
                    last[frames] = got[frames][-1][0].decode()
                    self._publish_raw(got[frames][-1][1], last[frames])
                if not self.clean:
                    self._check_paused(last)
            except REDIS_DOWN_ERRORS as exc:
                log.warning("camera %s feed: redis unavailable: %s", self.camera, exc)
                time.sleep(backoff.next_delay())
                continue

    def _check_paused(self, last: dict[str, str]) -> None:
        """Switch to raw frames when the newest frame is ``paused_after_s`` newer than the
        frame of the last result shown (with no result yet: as soon as frames come)."""
        frames = keys.frames(self.camera)
        if self.paused and not self.clean:
            return
        newest = self.redis.xrevrange(frames, count=1)
        if not newest:
            return
        fid = newest[0][0].decode()
        lag_ms = _entry_ms(fid) - self._result_frame_ms
        if self._fresh_result and self._result_frame_ms:
            self._fresh_result = False
            self._usual_lag_ms += 0.2 * (max(0.0, lag_ms) - self._usual_lag_ms)
        if self.clean or lag_ms > self.pause_bound_ms():
            if not self.clean:
                self.paused = True
                PAUSED.labels(self.camera).inc()
                log.info("camera %s: no results for the newest frames: live view shows raw "
                         "frames (detection paused)", self.camera)
            last[frames] = fid
            self._publish_raw(newest[0][1], fid)

    def pause_bound_ms(self) -> float:
        """How far the newest frame may be ahead of the last result before the view pauses:
        ``paused_after_s``, or twice the usual lag of results when the model is slower."""
        return max(self.paused_after_s * 1000, 2 * self._usual_lag_ms)

    def _publish_raw(self, fields: dict[bytes, bytes], entry_id: str) -> None:
        """Share a raw frame: with the paused band (annotated feed) or as it is (clean)."""
        try:
            frame = decode_frame(entry_id, fields, self.max_frame_bytes)
            jpeg = banner_jpeg(frame.jpeg, "" if self.clean else PAUSED_TEXT, self.quality,
                               self.limits)
        except (EntryError, JpegError) as exc:
            UNDRAWABLE.labels(self.camera).inc()
            self._warn.warning(self.camera, "camera %s: frame %s not drawable: %s",
                               self.camera, entry_id, exc)
            return
        ENCODED.labels(self.camera).inc()
        info = {"camera": self.camera, "frame": entry_id, "seq": frame.seq, "ts": frame.ts,
                "w": frame.w, "h": frame.h, "paused": not self.clean, "clean": self.clean}
        with self._cond:
            number = self._latest.number + 1 if self._latest else 1
            self._latest = AnnotatedFrame(number, jpeg, info, mjpeg_part(jpeg), raw=True)
            self._cond.notify_all()

    def _publish(self, fields: dict[bytes, bytes], entry_id: str) -> None:
        """Draw and share the frame of one result; a result or frame that does not decode or
        draw is counted (``cctv_web_frames_undrawable_total``), logged once per camera per
        minute, and skipped: the feed goes on with the next result."""
        try:
            result = decode_result(entry_id, fields)
            jpeg = self._annotate(result)
        except (EntryError, JpegError, redis.ResponseError) as exc:
            UNDRAWABLE.labels(self.camera).inc()
            self._warn.warning(self.camera, "camera %s: result %s not drawable: %s",
                               self.camera, entry_id, exc)
            return
        if jpeg is None:
            return
        ENCODED.labels(self.camera).inc()
        self._result_frame_ms = max(self._result_frame_ms, _entry_ms(result.frame))
        self._result_at = time.monotonic()
        self._fresh_result = True
        if self.paused:
            self.paused = False
            log.info("camera %s: results again: live view annotated", self.camera)
        with self._cond:
            number = self._latest.number + 1 if self._latest else 1
            self._latest = AnnotatedFrame(number, jpeg, result_dict(result), mjpeg_part(jpeg))
            self._cond.notify_all()

    @property
    def viewers(self) -> int:
        """Open MJPEG viewers and event streams following this feed."""
        return self._viewers

    def updates(self, stop_after: float | None = None,
                kind: str = "mjpeg") -> Iterator[AnnotatedFrame | None]:
        """Yield each new annotated frame (the current one first), or None after a second
        without one, until the consumer closes the generator (the client went away)."""
        self.ensure_running()
        seen = 0
        with self._cond:
            self._viewers += 1
        if kind == "mjpeg":
            VIEWERS.labels(self.camera).inc()
        started = time.monotonic()
        try:
            while stop_after is None or time.monotonic() - started < stop_after:
                with self._cond:
                    self._cond.wait_for(lambda n=seen: self._latest is not None
                                        and self._latest.number != n, timeout=1.0)
                    frame = self._latest
                    self._last_viewer = time.monotonic()
                if frame is None or frame.number == seen:
                    self.ensure_running()
                    yield None
                    continue
                seen = frame.number
                yield frame
        finally:
            with self._cond:
                self._viewers -= 1
                self._last_viewer = time.monotonic()
            if kind == "mjpeg":
                VIEWERS.labels(self.camera).dec()

    def frames(self, stop_after: float | None = None,
               repeat_after_s: float = REPEAT_AFTER_S, parts: bool = False) -> Iterator[bytes]:
        """Yield each new annotated JPEG (the current one first) until the client goes away;
        with ``parts`` as ready-made MJPEG parts (shared bytes: no per-viewer copy).

        While the camera is silent the last frame is sent again every ``repeat_after_s``: a
        write is the only way to notice a viewer that went away, so a silent camera cannot
        hold threads of closed viewers (and players keep showing the picture). Before the
        first frame, MJPEG streams get a CRLF of multipart preamble (ignored by players) as
        often, for the same reason."""
        updates = self.updates(stop_after)
        last: bytes | None = None
        sent_at = time.monotonic()
        try:
            for frame in updates:
                if frame is not None:
                    last, sent_at = (frame.part if parts else frame.jpeg), time.monotonic()
                    yield last
                elif time.monotonic() - sent_at >= repeat_after_s:
                    sent_at = time.monotonic()
                    if last is not None:
                        yield last
                    elif parts:
                        yield b"\r\n"
        finally:
            updates.close()

    def wait_latest(self, timeout_s: float) -> AnnotatedFrame | None:
        """The current annotated frame, waiting up to ``timeout_s`` for a first one."""
        self.ensure_running()
        with self._cond:
            self._cond.wait_for(lambda: self._latest is not None, timeout=timeout_s)
            self._last_viewer = time.monotonic()
            return self._latest


def _entry_ms(entry_id: str) -> int:
    head = entry_id.split("-")[0]
    return int(head) if head.isascii() and head.isdigit() else 0


class Feeds:
    """All camera feeds of this web process."""

    def __init__(self, client: redis.Redis, quality: int, idle_s: float,
                 limits: FrameLimits | None = None, max_frame_bytes: int = 8 * 1024 * 1024,
                 paused_after_s: float = 0.8) -> None:
        self.redis, self.quality, self.idle_s = client, quality, idle_s
        self.limits, self.max_frame_bytes = limits, max_frame_bytes
        self.paused_after_s = paused_after_s
        self._feeds: dict[tuple[str, bool], CameraFeed] = {}
        self._lock = threading.Lock()

    def viewer_count(self) -> int:
        """Open viewers over every camera of this process."""
        with self._lock:
            return sum(f.viewers for f in self._feeds.values())

    def get(self, camera: str, clean: bool = False) -> CameraFeed:
        """The feed of ``camera``: annotated (paused to raw frames when results stop), or
        ``clean`` (raw frames only)."""
        with self._lock:
            feed = self._feeds.get((camera, clean))
            if feed is None:
                feed = self._feeds[camera, clean] = CameraFeed(
                    self.redis, camera, self.quality, self.idle_s, self.limits,
                    self.max_frame_bytes, clean=clean, paused_after_s=self.paused_after_s)
            return feed
