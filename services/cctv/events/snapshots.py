"""Snapshots and crops of an event, from the frame still in ``cctv:frames:{cam}``.

The snapshot is the frame with every detection of its result drawn by the viewer's own
annotate functions (``core/annotate.py``), the rule's zone or line, and the event's objects
outlined in white; the crop is the first object's box with some margin, unannotated (what a
verifier and a receiver see). A frame OpenCV cannot decode counts as gone; an OpenCV error
while drawing or encoding is a :class:`SnapshotError` (the event goes on without images,
counted as a failure).
"""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import redis

from cctv.core import keys
from cctv.core.annotate import draw_detections
from cctv.core.jpeg import JpegError
from cctv.core.jpeg_decode import decode_jpeg
from cctv.events.config import CameraConfig, Rule
from cctv.events.rules import Subject
from cctv.events.verify import crop_box

log = logging.getLogger("cctv.events.snapshots")

JPEG_QUALITY = 85
ZONE_COLOR = (0, 215, 255)  # BGR amber


class SnapshotError(RuntimeError):
    """The snapshot or crop of an event could not be made (an OpenCV error)."""


class FrameSource:
    """Frames and detection results of one camera, fetched by entry id and cached per entry."""

    def __init__(self, client: redis.Redis, camera: str) -> None:
        self.redis, self.camera = client, camera
        self._images: dict[str, np.ndarray | None] = {}
        self._dets: dict[str, list[dict]] = {}
        #: frames that are in the stream but OpenCV refused to decode
        self.undecodable: set[str] = set()

    def image(self, frame_id: str) -> np.ndarray | None:
        """The decoded frame, or None when it has left the stream (or never decodes)."""
        if frame_id not in self._images:
            img = None
            if frame_id:
                entries = self.redis.xrange(keys.frames(self.camera), frame_id, frame_id)
                if entries and entries[0][1].get(b"jpeg"):
                    try:  # the shared decoder: header limits first, never a cv2.error
                        img = decode_jpeg(entries[0][1][b"jpeg"])
                    except JpegError as exc:  # e.g. a header with absurd dimensions
                        log.warning("camera %s: frame %s does not decode (%s)", self.camera,
                                    frame_id, exc)
                        self.undecodable.add(frame_id)
            self._images[frame_id] = img
        return self._images[frame_id]

    def dets(self, det_id: str) -> list[dict]:
        """The detections of one result entry ([] when it is gone)."""
        if det_id not in self._dets:
            out: list[dict] = []
            entries = self.redis.xrange(keys.detections(self.camera), det_id, det_id) if det_id \
                else []
            if entries:
                try:
                    out = json.loads(entries[0][1].get(b"dets", b"[]"))
                except ValueError:
                    out = []
            self._dets[det_id] = out
        return self._dets[det_id]

    def remember(self, det_id: str, dets: list[dict]) -> None:
        """Cache the result being processed (no round trip for it)."""
        self._dets[det_id] = dets


def _overlay(img: np.ndarray, cam: CameraConfig, rule: Rule) -> None:
    thick = max(1, round(sum(img.shape[:2]) / 500))
    if rule.zone and rule.zone in cam.zones:
        pts = np.array(cam.zones[rule.zone].points, np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [pts], True, ZONE_COLOR, thick, cv2.LINE_AA)
    if rule.line and rule.line in cam.lines:
        line = cam.lines[rule.line]
        cv2.line(img, tuple(map(int, line.a)), tuple(map(int, line.b)), ZONE_COLOR, thick + 1,
                 cv2.LINE_AA)


def render(frames: FrameSource, cam: CameraConfig, rule: Rule, subjects: list[Subject],
           padding: float = 0.15) -> tuple[bytes, bytes, np.ndarray | None] | None:
    """(snapshot JPEG, crop JPEG, crop image) for an event's subjects, or None when the
    frame of the first subject has left the stream. Raises :class:`SnapshotError`."""
    if not subjects:
        return None
    first = subjects[0]
    img = frames.image(first.frame_id)
    if img is None:
        if first.frame_id in frames.undecodable:
            raise SnapshotError(f"frame {first.frame_id} does not decode")
        return None
    try:
        return _render(img, frames, cam, rule, subjects, padding)
    except (cv2.error, ValueError, TypeError, IndexError, MemoryError) as exc:
        raise SnapshotError(f"{type(exc).__name__}: {str(exc).strip()[-200:]}") from None


def _render(img: np.ndarray, frames: FrameSource, cam: CameraConfig, rule: Rule,
            subjects: list[Subject], padding: float) -> tuple[bytes, bytes, np.ndarray]:
    first = subjects[0]
    crop = crop_box(img, first.xyxy, padding)
    snap = img.copy()
    _overlay(snap, cam, rule)
    draw_detections(snap, frames.dets(first.det_id))
    for s in subjects:
        if s.frame_id == first.frame_id:
            x1, y1, x2, y2 = s.xyxy
            cv2.rectangle(snap, (x1 - 2, y1 - 2), (x2 + 2, y2 + 2), (255, 255, 255), 2,
                          cv2.LINE_AA)
    q = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    ok_snap, snap_jpeg = cv2.imencode(".jpg", snap, q)
    ok_crop, crop_jpeg = cv2.imencode(".jpg", crop, q)
    if not (ok_snap and ok_crop):
        raise ValueError("JPEG encoding failed")
    return snap_jpeg.tobytes(), crop_jpeg.tobytes(), crop
