"""Annotated live frames per camera, encoded once and shared by every viewer.

One :class:`CameraFeed` per camera and web process follows the camera's detection stream,
fetches the frame each result refers to, draws the boxes, encodes the JPEG once and wakes all
waiting viewers. It stops by itself when nobody has watched for CCTV_VIEWER_IDLE_S.
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
from cctv.core.annotate import annotate_or_raise
from cctv.core.entries import EntryError, ResultEntry, decode_result
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


class CameraFeed:
    """Follows one camera's results and keeps the latest annotated JPEG."""

    def __init__(self, client: redis.Redis, camera: str, quality: int, idle_s: float,
                 limits: FrameLimits | None = None, max_frame_bytes: int = 8 * 1024 * 1024
                 ) -> None:
        self.redis, self.camera, self.quality, self.idle_s = client, camera, quality, idle_s
        self.limits, self.max_frame_bytes = limits or FrameLimits(), max_frame_bytes
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
        stream = keys.detections(self.camera)
        last_id = "$"
        backoff = Backoff()
        # Start from the newest existing result so a new viewer sees a picture at once.
        try:
            newest = self.redis.xrevrange(stream, count=1)
            if newest:
                last_id = newest[0][0].decode()
                self._publish(newest[0][1], last_id)
        except REDIS_DOWN_ERRORS:
            pass
        while True:
            with self._cond:
                idle = self._viewers == 0 and time.monotonic() - self._last_viewer > self.idle_s
                if idle:
                    self._thread = None
                    return
            try:
                resp = self.redis.xread({stream: last_id}, count=16, block=500)
                backoff.reset()
            except REDIS_DOWN_ERRORS as exc:
                log.warning("camera %s feed: redis unavailable: %s", self.camera, exc)
                time.sleep(backoff.next_delay())
                continue
            if not resp:
                continue
            entries = resp[0][1]
            last_id = entries[-1][0].decode()
            self._publish(entries[-1][1], last_id)  # newest only: live, not a replay

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


class Feeds:
    """All camera feeds of this web process."""

    def __init__(self, client: redis.Redis, quality: int, idle_s: float,
                 limits: FrameLimits | None = None, max_frame_bytes: int = 8 * 1024 * 1024
                 ) -> None:
        self.redis, self.quality, self.idle_s = client, quality, idle_s
        self.limits, self.max_frame_bytes = limits, max_frame_bytes
        self._feeds: dict[str, CameraFeed] = {}
        self._lock = threading.Lock()

    def viewer_count(self) -> int:
        """Open viewers over every camera of this process."""
        with self._lock:
            return sum(f.viewers for f in self._feeds.values())

    def get(self, camera: str) -> CameraFeed:
        with self._lock:
            feed = self._feeds.get(camera)
            if feed is None:
                feed = self._feeds[camera] = CameraFeed(self.redis, camera, self.quality,
                                                        self.idle_s, self.limits,
                                                        self.max_frame_bytes)
            return feed
