"""OpenCV sources: video files, V4L2 webcams and RTSP cameras (decode, then JPEG encode)."""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit

from cctv_sender.sources import (
    BuildOptions,
    SourceConfigError,
    SourceKind,
    SourceSpec,
    redact,
    split_options,
)
from cctv_sender.sources.base import Source, SourceEnded, SourceError


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise SourceError("this source needs OpenCV: pip install opencv-python-headless "
                          "(or apt install python3-opencv on a Pi)") from None
    return cv2


class OpenCVSource(Source):
    """A cv2.VideoCapture behind the :class:`Source` interface.

    ``kind`` is ``file``, ``v4l2`` or ``rtsp``. Files are paced: at ``pace_fps`` if given,
    else at the file's own frame rate (``pace_fps=0`` with ``paced=False``: as fast as the
    decoder goes); ``loop`` restarts them at the end.
    """

    def __init__(self, kind: str, target: str | int, *, name: str, quality: int = 80,
                 size: tuple[int, int] | None = None, fps: float = 0.0, loop: bool = False,
                 paced: bool = True, fourcc: str = "", passthrough: bool = False,
                 timeout_s: float = 10.0) -> None:
        self.kind, self.target, self.name = kind, target, name
        self.quality, self.size, self.req_fps = quality, size, fps
        self.loop, self.paced, self.fourcc, self.passthrough = loop, paced, fourcc, passthrough
        self.timeout_s = timeout_s
        self.cap: Any = None
        self.nominal_fps = 0.0
        self._interval = 0.0
        self._due = 0.0
        self._frame_size: tuple[int, int] = (0, 0)
        self.loops = 0

    # -- open/close ---------------------------------------------------------------------------
    def open(self) -> None:
        cv2 = _cv2()
        self.close()
        if self.kind == "file" and not os.path.isfile(str(self.target)):
            raise SourceError(f"{self.name}: no such file")
        if self.kind == "rtsp":
            # TCP interleaving survives NAT and lossy Wi-Fi better than UDP.
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        api = cv2.CAP_V4L2 if self.kind == "v4l2" else cv2.CAP_FFMPEG
        params: list[int] = []
        if self.kind != "file":
            ms = int(self.timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(self.target, api, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.name}: cannot open")
        if self.kind == "v4l2":
            if self.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc[:4].ljust(4)))
            if self.size:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
            if self.req_fps:
                cap.set(cv2.CAP_PROP_FPS, self.req_fps)
            if self.passthrough:
                cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)
        self.cap = cap
        native = cap.get(cv2.CAP_PROP_FPS) or 0.0
        self.nominal_fps = native if 0 < native < 1000 else 0.0
        self._frame_size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if self.kind == "file":
            pace = self.req_fps or (self.nominal_fps if self.paced else 0.0)
            if self.req_fps:
                self.nominal_fps = self.req_fps
            self._interval = 1.0 / pace if pace > 0 else 0.0
        self._due = time.monotonic()

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def describe(self) -> str:
        w, h = self._frame_size
        fps = f"{self.nominal_fps:.2f} fps" if self.nominal_fps else "fps unknown"
        return f"{self.name} ({w}x{h}, {fps})"

    # -- frames -------------------------------------------------------------------------------
    def grab(self) -> None:
        if self.cap is None:
            raise SourceError(f"{self.name}: not open")
        if self._interval:
            delay = self._due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            # never accumulate more than one frame of debt (after a stall, just go on)
            self._due = max(self._due + self._interval, time.monotonic() - self._interval)
        if self.cap.grab():
            return
        if self.kind == "file":
            if not self.loop:
                raise SourceEnded(f"{self.name}: end of file")
            self.loops += 1
            self.cap.set(_cv2().CAP_PROP_POS_FRAMES, 0)
            if self.cap.grab():
                return
            self.open()  # some containers do not seek: reopen instead
            if self.cap.grab():
                return
            raise SourceError(f"{self.name}: cannot rewind")
        raise SourceError(f"{self.name}: no frame (camera lost?)")

    def retrieve(self) -> bytes:
        cv2 = _cv2()
        ok, img = self.cap.retrieve()
        if not ok or img is None:
            raise SourceError(f"{self.name}: frame could not be decoded")
        if self.passthrough and (img.ndim == 1 or img.shape[0] == 1):
            return img.tobytes()  # the camera's own MJPEG frame
        if self.size and (img.shape[1], img.shape[0]) != self.size:
            img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise SourceError(f"{self.name}: JPEG encoding failed")
        return buf.tobytes()


# --- the kinds this module runs: file, v4l2, rtsp ---


def _parse_rtsp(raw: str) -> SourceSpec:
    if not urlsplit(raw).hostname:
        raise SourceConfigError(f"source {redact(raw)!r}: RTSP URL has no host")
    return SourceSpec("rtsp", raw, {}, redact(raw))


def _parse_v4l2(raw: str) -> SourceSpec:
    if raw.isascii() and raw.isdigit():
        return SourceSpec("v4l2", int(raw), {}, f"v4l2:{raw}")
    if raw.lower().startswith("/dev/video"):
        return SourceSpec("v4l2", raw, {}, f"v4l2:{raw}")
    path, options = split_options(raw[5:])
    if not path:
        raise SourceConfigError(f"source {raw!r}: give a device, e.g. v4l2:/dev/video0")
    target: str | int = int(path) if path.isascii() and path.isdigit() else path
    return SourceSpec("v4l2", target, options, f"v4l2:{path}")


def _parse_file(raw: str) -> SourceSpec:
    if raw.lower().startswith("file:"):
        rest = raw[5:]
        if rest.startswith("//"):
            rest = rest[2:]
        path, options = split_options(rest)
    else:
        path, options = split_options(raw)
    if not path:
        raise SourceConfigError(f"source {raw!r}: no file path")
    path = os.path.expanduser(path)
    return SourceSpec("file", path, options, f"file:{os.path.basename(path)}")


def _build_file(spec: SourceSpec, o: BuildOptions) -> Source:
    pace = spec.opt_float("fps", 0.0)
    realtime = spec.opt_bool("realtime", True) and spec.options.get("fps") != "0"
    return OpenCVSource("file", spec.target, name=spec.display, quality=o.quality, size=o.size,
                        fps=pace, loop=spec.opt_bool("loop", o.loop), paced=realtime)


def _build_device(spec: SourceSpec, o: BuildOptions) -> Source:
    return OpenCVSource(spec.kind, spec.target, name=spec.display, quality=o.quality,
                        size=o.size, fps=spec.opt_float("fps", o.fps if spec.kind == "v4l2"
                                                        else 0.0),
                        fourcc=spec.options.get("fourcc", "MJPG" if spec.kind == "v4l2"
                                                else ""),
                        passthrough=spec.opt_bool("passthrough"), timeout_s=o.timeout_s)


RTSP = SourceKind("rtsp", ("rtsp://", "rtsps://"), _parse_rtsp, _build_device, hint="rtsp://",
                  order=30)
V4L2 = SourceKind("v4l2", ("v4l2:",), _parse_v4l2, _build_device, hint="v4l2:", order=20,
                  claims=lambda raw: (raw.isascii() and raw.isdigit())
                  or raw.lower().startswith("/dev/video"))
FILE = SourceKind("file", ("file:",), _parse_file, _build_file, fallback=True, hint="file:",
                  order=50)
