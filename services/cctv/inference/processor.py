"""Decode, detect, track and publish frames; a frame that fails any step costs one counted
``corrupt`` drop, never the leader. Between the model and the tracker each camera's detection
settings (inference/camera_filter.py) leave out what the camera ignores."""

from __future__ import annotations

import time
from dataclasses import replace

import redis

from cctv.core.jpeg import JpegError
from cctv.core.jpeg_decode import decode_jpeg_at
from cctv.core.registry import RegistryCache
from cctv.inference.camera_filter import CameraFilters
from cctv.inference.classes import class_filter
from cctv.inference.clock import RedisClock
from cctv.inference.detector import Detection, Detector
from cctv.inference.metrics import INFER_SECONDS, LAG_SECONDS, ReplicaStats
from cctv.inference.publisher import NotLeader, Publisher
from cctv.inference.records import Frame, Result
from cctv.inference.settings import InferenceSettings
from cctv.inference.tracking import Tracking


def to_full_size(dets: list[Detection], frame: Frame) -> list[Detection]:
    """``dets`` of ``frame``'s decoded image, in pixels of the frame as sent (the image may
    have been decoded at a fraction of its size)."""
    w, h = frame.full_size
    iw, ih = frame.image.shape[1], frame.image.shape[0]
    if (iw, ih) == (w, h) or not iw or not ih:
        return dets
    sx, sy = w / iw, h / ih
    return [replace(d, xyxy=(min(w, round(d.xyxy[0] * sx)), min(h, round(d.xyxy[1] * sy)),
                             min(w, round(d.xyxy[2] * sx)), min(h, round(d.xyxy[3] * sy))))
            for d in dets]


class FrameProcessor:
    """Turns frames into published results for one leadership."""

    def __init__(self, settings: InferenceSettings, detector: Detector, tracking: Tracking,
                 publisher: Publisher, clock: RedisClock, stats: ReplicaStats,
                 registry: RegistryCache | None = None) -> None:
        self.s, self.detector, self.tracking = settings, detector, tracking
        self.publisher, self.clock, self.stats = publisher, clock, stats
        names = getattr(detector, "names", None)
        # checked at start (inference/service.py): the classes kept, before tracking
        self.classes = class_filter(settings.classes, names)
        # each camera's detection settings from the registry (the classes above without one)
        self.filters = CameraFilters(self.classes, names, registry)

    def decode(self, frame: Frame) -> bool:
        """Decode (and letterbox, when the detector can) ``frame`` in place; a frame that
        fails is dropped as corrupt and False returned."""
        try:
            if frame.image is None:
                # decoded no larger than the model needs (see decode_jpeg_at)
                frame.image, frame.size = decode_jpeg_at(frame.jpeg, self.s.frame_limits,
                                                         self.s.imgsz)
            prepare = getattr(self.detector, "prepare", None)
            if prepare is not None and frame.prepared is None:
                frame.prepared = prepare(frame.image)
            return True
        except JpegError as exc:
            why = str(exc)
        except Exception as exc:  # noqa: BLE001 - any letterbox failure is this frame's
            why = f"letterbox failed: {type(exc).__name__}: {exc}"
        frame.image = frame.prepared = None
        self.publisher.drop_corrupt(frame, why)
        return False

    def _detect(self, frames: list[Frame]) -> list[tuple[Frame, list[Detection]]]:
        """Detections of each frame; when the model fails on the batch, each frame alone, and
        a frame it fails on alone is dropped as corrupt."""
        inputs = [f.prepared if f.prepared is not None else f.image for f in frames]
        try:
            keep = self.filters.for_camera
            return [(f, keep(f.camera).keep(to_full_size(d, f), *f.full_size))
                    for f, d in zip(frames, self.detector.detect(inputs), strict=True)]
        except Exception as exc:  # noqa: BLE001 - a model error must not end the loop
            if len(frames) == 1:
                self.publisher.drop_corrupt(frames[0], f"detection failed: "
                                                       f"{type(exc).__name__}: {exc}")
                return []
        out = []
        for f in frames:
            out += self._detect([f])
        return out

    def process(self, frames: list[Frame]) -> None:
        """Decode, detect, track and publish ``frames`` (at most one per camera)."""
        ok = [f for f in frames if self.decode(f)]
        if not ok:
            return
        self.filters.refresh()  # the registry's copy: a GET a second at most
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
                self.publisher.drop_corrupt(f, f"tracking failed: {type(exc).__name__}: {exc}")
        if not tracked:
            return
        done_us = time.time_ns() // 1000
        self.publisher.publish([Result(f, d, infer_ms, done_us, *f.full_size)
                                for f, d in tracked],
                               self.tracking.due_states())
        now_ms = self.clock.now_ms()
        lag = max(now_ms - f.id_ms for f, _ in tracked)
        for f, _ in tracked:
            LAG_SECONDS.labels(f.camera).set((now_ms - f.id_ms) / 1000)
        self.stats.processed(len(tracked), lag)
