"""Event clips: the frames around an event, kept as an MP4 (H.264) next to its snapshot.

A camera's frames stay in ``cctv:frames:{cam}`` for a few hundred frames only, so once an
event has closed (or fired, for an instant rule) and its post-margin has passed, the frames from
``clip_margin_s`` before its first frame to ``clip_margin_s`` after its last are read, the
detections drawn on them as the viewer draws them, and encoded with PyAV's bundled libx264 into
``<camera>/<day>/<event id>.mp4``: the same folder, the same retention as the snapshot.

Jobs wait in ``cctv:events:clips`` (``keys.EVENTS_CLIPS``, a sorted set: event id scored by
the time its clip is due), so a restarted or taken-over events service still writes the clips
of events it did not get to. A clip that cannot be made (its frames have left the stream, an
encoder error) is recorded as a ``clip`` failure: counted, logged, in the dead-letter stream;
the event itself is kept. A frame that does not decode is left out of the clip.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import redis

from cctv.core import keys
from cctv.core.annotate import draw_detections
from cctv.core.entries import EntryError, decode_result
from cctv.core.jpeg import JpegError
from cctv.core.jpeg_decode import decode_jpeg
from cctv.core.redisconn import REDIS_DOWN_ERRORS, Backoff
from cctv.events.storage import EventStore

log = logging.getLogger("cctv.events.clips")

#: the most frames one clip (or the viewer's MJPEG replay) reads
CLIP_MAX_FRAMES = 600
#: the longest clip kept, in seconds from the event's first frame (minus the margin)
CLIP_MAX_S = 60.0
MAX_SIDE = 1920  # larger frames are scaled down for the clip
_ID_TAIL = "-18446744073709551615"


class ClipError(RuntimeError):
    """A clip could not be encoded; the message says why."""


def clip_range(record: dict, margin_ms: float, now_ms: float | None = None) -> tuple[int, int]:
    """``[lo, hi]`` in ms of the frames around ``record`` (an open event: up to now)."""
    def ms(entry_id: str, fallback: float) -> float:
        head = (entry_id or "").split("-")[0]
        return float(head) if head.isascii() and head.isdigit() else fallback

    first = ms(record.get("first_frame", ""), record["start_ms"])
    last = ms(record.get("last_frame", ""), record.get("end_ms") or record["start_ms"])
    if record.get("status") == "open":
        last = max(last, time.time() * 1000 if now_ms is None else now_ms)
    return int(first - margin_ms), int(last + margin_ms)


def clip_frames(client: redis.Redis, camera: str, lo_ms: int, hi_ms: int,
                limit: int = CLIP_MAX_FRAMES) -> Iterator[tuple[str, bytes]]:
    """(frame id, JPEG) of the frames in ``[lo_ms, hi_ms]`` still in the camera's stream."""
    start, sent = f"{lo_ms}-0", 0
    while sent < limit:
        entries = client.xrange(keys.frames(camera), start, f"{hi_ms}{_ID_TAIL}", count=50)
        if not entries:
            return
        for eid, fields in entries:
            if fields.get(b"jpeg") and sent < limit:
                yield eid.decode(), fields[b"jpeg"]
                sent += 1
        start = "(" + entries[-1][0].decode()


def has_frames(client: redis.Redis, camera: str, lo_ms: int, hi_ms: int) -> bool:
    """Whether any frame of ``[lo_ms, hi_ms]`` is still in the camera's stream."""
    return bool(client.xrange(keys.frames(camera), f"{lo_ms}-0", f"{hi_ms}{_ID_TAIL}", count=1))


def clip_detections(client: redis.Redis, camera: str, lo_ms: int, hi_ms: int) -> dict[str, list]:
    """Detections of those frames, by frame id (results come a little after their frames)."""
    out: dict[str, list] = {}
    for eid, fields in client.xrange(keys.detections(camera), f"{lo_ms}-0",
                                     f"{hi_ms + 5000}{_ID_TAIL}", count=CLIP_MAX_FRAMES * 2):
        try:
            result = decode_result(eid, fields)
        except EntryError:
            continue  # a result that does not decode: its frame is shown without boxes
        out[result.frame] = result.dets_json()
    return out


def encode_mp4(frames: list[tuple[int, np.ndarray]]) -> bytes:
    """An H.264 MP4 of ``frames`` ((ms, BGR image) in time order), each shown at its own time.

    Raises :class:`ClipError` when there is nothing to encode or the encoder fails.
    """
    import av  # PyAV: FFmpeg with libx264, bundled in its wheel

    if not frames:
        raise ClipError("no frames")
    h, w = frames[0][1].shape[:2]
    scale = min(1.0, MAX_SIDE / max(h, w))
    # H.264 with 4:2:0 chroma needs even sides
    out_w, out_h = int(w * scale) // 2 * 2, int(h * scale) // 2 * 2
    t0 = frames[0][0]
    # a file, not memory: +faststart (the index first, so a browser plays before the whole
    # file has arrived) rewrites the file once it is complete
    fd, tmp = tempfile.mkstemp(prefix="cctv-clip-", suffix=".mp4")
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4",
                     options={"movflags": "+faststart"}) as box:
            stream = box.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = out_w, out_h, "yuv420p"
            # milliseconds: each frame keeps the camera's own timing (the rate is nominal)
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.options = {"preset": "veryfast", "crf": "26"}
            last_pts = -1
            for ms, img in frames:
                pts = max(ms - t0, last_pts + 1)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
                if (frame.width, frame.height) != (out_w, out_h):
                    frame = frame.reformat(width=out_w, height=out_h)
                frame.pts, frame.time_base, last_pts = pts, Fraction(1, 1000), pts
                box.mux(stream.encode(frame))
            box.mux(stream.encode(None))
        return Path(tmp).read_bytes()
    except (av.FFmpegError, ValueError, MemoryError, OSError) as exc:
        raise ClipError(f"encoding failed: {type(exc).__name__}: {exc}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def render_clip(client: redis.Redis, record: dict, margin_ms: float) -> bytes | None:
    """The MP4 of ``record``'s clip, or None when none of its frames is in the stream."""
    lo, hi = clip_range(record, margin_ms)
    hi = min(hi, lo + int(CLIP_MAX_S * 1000))
    cam = record["camera"]
    dets = clip_detections(client, cam, lo, hi)
    images: list[tuple[int, np.ndarray]] = []
    seen = 0
    for fid, jpeg in clip_frames(client, cam, lo, hi):
        seen += 1
        try:
            img = decode_jpeg(jpeg)
            draw_detections(img, dets.get(fid, []))
        except (JpegError, ValueError, TypeError, KeyError):
            continue  # a frame that does not decode or draw is left out of the clip
        if images and img.shape != images[0][1].shape:
            continue  # the camera changed resolution mid-clip: keep the first size
        images.append((int(fid.split("-")[0]), img))
    if not images:
        if seen:
            raise ClipError(f"none of its {seen} frames decodes")
        return None
    return encode_mp4(images)


class ClipJobs:
    """Clips waiting for their post-margin: ``cctv:events:clips``, event id -> due time."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def schedule(self, event_id: str, due_ms: float) -> None:
        """Write the clip of ``event_id`` at ``due_ms`` (a later call moves it)."""
        self.redis.zadd(keys.EVENTS_CLIPS, {event_id: int(due_ms)})

    def due(self, now_ms: float, limit: int = 10) -> list[str]:
        """Event ids whose clip is due."""
        return [m.decode() for m in self.redis.zrangebyscore(keys.EVENTS_CLIPS, "-inf", int(now_ms),
                                                             start=0, num=limit)]

    def done(self, event_id: str) -> None:
        """Forget the job of ``event_id`` (written, or given up)."""
        self.redis.zrem(keys.EVENTS_CLIPS, event_id)


class ClipWriter:
    """The thread of the events service that writes due clips (encoding stays off the rules
    loop, so a clip never delays the next result)."""

    def __init__(self, store: EventStore, margin_ms: float, tz: ZoneInfo,
                 stop: threading.Event, poll_s: float = 0.5) -> None:
        self.store, self.margin_ms, self.tz, self.stop = store, margin_ms, tz, stop
        self.poll_s = poll_s
        self.jobs = ClipJobs(store.redis)
        self.thread = threading.Thread(target=self._run, name="clips", daemon=True)
        self.written = 0

    def start(self) -> None:
        """Start the thread."""
        self.thread.start()

    def _run(self) -> None:
        backoff = Backoff(cap_s=5.0)
        while not self.stop.is_set():
            try:
                ids = self.jobs.due(time.time() * 1000)
                for eid in ids:
                    self.write(eid)
                backoff.reset()
            except REDIS_DOWN_ERRORS as exc:
                log.warning("clips: redis unavailable (%s); retrying", exc)
                self.stop.wait(backoff.next_delay())
                continue
            if not ids:
                self.stop.wait(self.poll_s)

    def write(self, event_id: str) -> bool:
        """Write the clip of ``event_id`` now; True when a file was written."""
        record = self.store.get(event_id)
        if record is None:  # deleted by retention meanwhile
            self.jobs.done(event_id)
            return False
        try:
            mp4 = render_clip(self.store.redis, record, self.margin_ms)
        except ClipError as exc:
            self.store.failure("clip", event_id, str(exc))
            self.jobs.done(event_id)
            return False
        if mp4 is None:
            self.store.failure("clip", event_id, "its frames have left the stream")
            self.jobs.done(event_id)
            return False
        rel = self.store.clip_path(record, self.tz)
        try:
            self.store.write_file(rel, mp4)
        except OSError as exc:  # a full or read-only disk
            self.store.failure("storage", event_id, f"cannot write {rel}: {exc}")
            self.jobs.done(event_id)
            return False
        if not self.store.set_clip(event_id, rel):  # the event went while encoding
            (self.store.media_dir / rel).unlink(missing_ok=True)
        self.jobs.done(event_id)
        self.written += 1
        log.info("event %s: clip %s (%d KiB)", event_id, rel, len(mp4) // 1024,
                 extra={"event": event_id, "camera": record["camera"]})
        return True
