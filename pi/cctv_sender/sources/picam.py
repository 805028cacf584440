"""Raspberry Pi camera through picamera2 (apt: python3-picamera2), imported only when used.

Frames are JPEG-encoded by the Pi's hardware MJPEG encoder (``MJPEGEncoder``, the V4L2
codec on a Pi 4) and handed over through a picamera2 ``Output``; where the hardware encoder
is missing (Pi 5) or refused, picamera2's software ``JpegEncoder`` does it instead.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from cctv_sender.sources.base import Source, SourceError


class _FrameSlot:
    """The newest encoded frame, handed from picamera2's encoder thread to ``grab``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: bytes | None = None
        self.received = 0

    def put(self, data: bytes) -> None:
        with self._cond:
            self._frame = data
            self.received += 1
            self._cond.notify_all()

    def take(self, timeout: float) -> bytes | None:
        with self._cond:
            if self._frame is None:
                self._cond.wait(timeout)
            data, self._frame = self._frame, None
            return data


def _make_output(slot: _FrameSlot) -> Any:
    """A picamera2 ``Output`` subclass instance that puts each encoded frame in ``slot``."""
    from picamera2.outputs import Output

    class SlotOutput(Output):  # type: ignore[misc, valid-type]
        def outputframe(self, frame: Any, keyframe: bool = True, timestamp: Any = None,
                        *_args: Any, **_kwargs: Any) -> None:
            slot.put(bytes(frame))

    return SlotOutput()


class PicameraSource(Source):
    """A Raspberry Pi camera: ``size`` (output resolution), ``fps``, ``mode`` (index into
    ``Picamera2.sensor_modes``) and ``encoder`` (``auto``, ``hw`` or ``sw``)."""

    def __init__(self, camera_num: int = 0, *, name: str = "picamera2:0",
                 size: tuple[int, int] = (1280, 720), fps: float = 0.0, mode: int | None = None,
                 encoder: str = "auto", quality: int = 80, timeout_s: float = 10.0) -> None:
        if encoder not in ("auto", "hw", "sw"):
            from cctv_sender.sources import SourceConfigError
            raise SourceConfigError(f"picamera2 option encoder={encoder!r}: use auto, hw or sw")
        self.camera_num, self.name, self.size, self.fps = camera_num, name, size, fps
        self.mode, self.encoder_kind, self.quality = mode, encoder, quality
        self.timeout_s = timeout_s
        self.nominal_fps = fps
        self.cam: Any = None
        self.encoder: Any = None
        self.encoder_name = ""
        self._slot = _FrameSlot()
        self._current = b""

    def _config(self, cam: Any) -> Any:
        sensor: dict[str, Any] = {}
        if self.mode is not None:
            modes = cam.sensor_modes
            if self.mode >= len(modes):
                raise SourceError(f"{self.name}: sensor mode {self.mode} does not exist "
                                  f"(the camera has {len(modes)})")
            m = modes[self.mode]
            sensor = {"output_size": m["size"], "bit_depth": m["bit_depth"]}
        controls: dict[str, Any] = {}
        if self.fps:
            controls["FrameRate"] = float(self.fps)
        kwargs: dict[str, Any] = {"main": {"size": tuple(self.size), "format": "YUV420"},
                                  "controls": controls, "buffer_count": 4}
        if sensor:
            kwargs["sensor"] = sensor
        return cam.create_video_configuration(**kwargs)

    def _quality_kwargs(self) -> dict[str, Any]:
        try:
            from picamera2.encoders import Quality
        except ImportError:
            return {}
        q = self.quality
        level = (Quality.VERY_HIGH if q >= 90 else Quality.HIGH if q >= 75
                 else Quality.MEDIUM if q >= 50 else Quality.LOW)
        return {"quality": level}

    def open(self) -> None:
        try:
            from picamera2 import Picamera2, encoders  # Pi only: imported when used
        except ImportError:
            raise SourceError("picamera2 is not installed: apt install python3-picamera2 and "
                              "make the venv with --system-site-packages") from None
        self.close()
        try:
            cam = Picamera2(self.camera_num)
        except (IndexError, RuntimeError, OSError) as exc:
            raise SourceError(f"{self.name}: cannot open camera ({exc})") from None
        self.cam = cam
        try:
            cam.configure(self._config(cam))
            output = _make_output(self._slot)
            started = False
            if self.encoder_kind in ("auto", "hw"):
                try:
                    self.encoder = encoders.MJPEGEncoder()
                    self._start(output)
                    self.encoder_name = "hardware MJPEG"
                    started = True
                except Exception as exc:
                    if self.encoder_kind == "hw":
                        raise SourceError(f"{self.name}: hardware MJPEG encoder: {exc}") from None
                    self._stop_quietly()
            if not started:
                self.encoder = encoders.JpegEncoder(q=self.quality)
                self._start(output)
                self.encoder_name = "software JPEG"
        except SourceError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise SourceError(f"{self.name}: {exc}") from None

    def _start(self, output: Any) -> None:
        try:
            self.cam.start_encoder(self.encoder, output, **self._quality_kwargs())
        except TypeError:  # older picamera2 without the quality argument
            self.cam.start_encoder(self.encoder, output)
        self.cam.start()

    def _stop_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.cam.stop_encoder()
        with contextlib.suppress(Exception):
            self.cam.stop()

    def close(self) -> None:
        if self.cam is not None:
            self._stop_quietly()
            with contextlib.suppress(Exception):
                self.cam.close()
            self.cam = None

    def describe(self) -> str:
        w, h = self.size
        fps = f"{self.fps:g} fps" if self.fps else "default fps"
        mode = f", sensor mode {self.mode}" if self.mode is not None else ""
        return f"{self.name} ({w}x{h}, {fps}{mode}, {self.encoder_name})"

    def grab(self) -> None:
        if self.cam is None:
            raise SourceError(f"{self.name}: not open")
        deadline = time.monotonic() + self.timeout_s
        data = self._slot.take(self.timeout_s)
        if data is None:
            waited = self.timeout_s - max(0.0, deadline - time.monotonic())
            raise SourceError(f"{self.name}: no frame for {waited:.0f}s (camera stalled?)")
        self._current = data

    def retrieve(self) -> bytes:
        return self._current
