"""Raspberry Pi camera through picamera2 (apt: python3-picamera2), imported only when used.

Which JPEG encoder runs depends on the board, and is reported as it is:

* Pi Zero 2 W, 3 and 4 have the V4L2 hardware codec (``bcm2835-codec``): picamera2's
  ``MJPEGEncoder`` encodes there at almost no CPU cost.
* A Pi 5 has no hardware video encoder. Since picamera2 0.3.13 the name ``MJPEGEncoder`` is
  then an alias of ``LibavMjpegEncoder``, a frame-threaded libav encoder that holds several
  frames and cannot keep an exact JPEG quality; the sender recognises the alias and uses
  picamera2's ``JpegEncoder`` (simplejpeg, libjpeg-turbo) instead, the cheaper software path.

Quality: ``JpegEncoder(q=...)`` keeps the configured quality only if ``start_encoder`` gets no
``quality=`` (which would replace it from picamera2's own table). ``JpegEncoder`` accepts the
YUV420 stream only since picamera2 0.3.26; older versions get an RGB888 stream.

Capture time: picamera2 passes each frame's sensor timestamp to the output as microseconds
since the encoder's first frame, and keeps that first frame's sensor time (CLOCK_MONOTONIC)
in ``encoder.firsttimestamp``; the sum, moved to the wall clock, is when the frame was
exposed (not when it came out of the encoder).

Failed opens: ``Picamera2()`` creates its notification pipe before it looks the camera up,
and its ``close()`` does nothing for a camera that never opened; the sender asks
``global_camera_info()`` first and releases what a failed constructor left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from importlib import metadata
from typing import Any

from cctv_sender.sources import (
    BuildOptions,
    SourceConfigError,
    SourceKind,
    SourceSpec,
    split_options,
)
from cctv_sender.sources.base import Source, SourceError

log = logging.getLogger("cctv_sender.picam")

#: first picamera2 release whose JpegEncoder encodes YUV420 buffers
JPEG_YUV420_SINCE = (0, 3, 26)


def picamera2_version() -> tuple[int, ...] | None:
    """The installed picamera2's version (from its package metadata), None if unknown."""
    try:
        raw = metadata.version("picamera2")
    except metadata.PackageNotFoundError:
        return None
    parts = []
    for piece in raw.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class _FrameSlot:
    """The newest encoded frame, handed from picamera2's encoder thread to ``grab``; a frame
    replaced before ``grab`` took it is counted in ``superseded``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: tuple[bytes, int | None] | None = None
        self.received = 0
        self.superseded = 0

    def put(self, data: bytes, ts_us: int | None) -> None:
        with self._cond:
            if self._frame is not None:
                self.superseded += 1
            self._frame = (data, ts_us)
            self.received += 1
            self._cond.notify_all()

    def take(self, timeout: float) -> tuple[bytes, int | None] | None:
        with self._cond:
            if self._frame is None:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            return frame

    def discard(self) -> None:
        """Forget a frame nobody will take (the camera closes): it counts as superseded."""
        with self._cond:
            if self._frame is not None:
                self.superseded += 1
                self._frame = None


def _make_output(slot: _FrameSlot, source: PicameraSource) -> Any:
    """A picamera2 ``Output`` subclass instance that puts each encoded frame in ``slot``
    with its sensor time on the wall clock."""
    from picamera2.outputs import Output

    class SlotOutput(Output):  # type: ignore[misc, valid-type]
        def outputframe(self, frame: Any, keyframe: bool = True, timestamp: Any = None,
                        *_args: Any, **_kwargs: Any) -> None:
            slot.put(bytes(frame), source.sensor_wall_us(timestamp))

    return SlotOutput()


def release_failed_camera(cam: Any) -> None:
    """Release what a ``Picamera2`` constructor that raised left behind: its notification
    pipe, and its entry in the camera manager (which would keep it alive for good)."""
    reader = getattr(cam, "notifymeread", None)
    if reader is not None:
        with contextlib.suppress(Exception):
            reader.close()
    elif isinstance(getattr(cam, "notifyme_r", None), int):
        with contextlib.suppress(OSError):
            os.close(cam.notifyme_r)
    if isinstance(getattr(cam, "notifyme_w", None), int):
        with contextlib.suppress(OSError):
            os.close(cam.notifyme_w)
    manager = getattr(type(cam), "_cm", None)
    idx = getattr(cam, "camera_idx", None)
    cameras = getattr(manager, "cameras", None)
    if isinstance(cameras, dict) and idx is not None and cameras.get(idx) is cam:
        with contextlib.suppress(Exception):
            manager.cleanup(idx)


class PicameraSource(Source):
    """A Raspberry Pi camera: ``size`` (output resolution), ``fps`` (the sensor's frame
    rate), ``mode`` (index into ``Picamera2.sensor_modes``) and ``encoder`` (``auto``,
    ``hw``: the hardware MJPEG encoder or an error, ``sw``: picamera2's JpegEncoder)."""

    def __init__(self, camera_num: int = 0, *, name: str = "picamera2:0",
                 size: tuple[int, int] = (1280, 720), fps: float = 0.0, mode: int | None = None,
                 encoder: str = "auto", quality: int = 80, timeout_s: float = 10.0) -> None:
        if encoder not in ("auto", "hw", "sw"):
            raise SourceConfigError(f"picamera2 option encoder={encoder!r}: use auto, hw or sw")
        self.camera_num, self.name, self.size, self.fps = camera_num, name, size, fps
        self.mode, self.encoder_kind, self.quality = mode, encoder, quality
        self.timeout_s = timeout_s
        self.nominal_fps = fps
        self.cam: Any = None
        self.encoder: Any = None
        self.encoder_name = ""
        self.stream_format = ""
        self._slot = _FrameSlot()
        self._current = b""
        self._current_ts: int | None = None

    # -- counters the sender reads (see Source) -------------------------------------------------
    @property
    def superseded(self) -> int:  # type: ignore[override]
        return self._slot.superseded

    # -- opening --------------------------------------------------------------------------------
    def _config(self, cam: Any, fmt: str) -> Any:
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
        kwargs: dict[str, Any] = {"main": {"size": tuple(self.size), "format": fmt},
                                  "controls": controls, "buffer_count": 4}
        if sensor:
            kwargs["sensor"] = sensor
        return cam.create_video_configuration(**kwargs)

    def _hw_quality(self) -> Any:
        """The hardware encoder is bitrate-controlled; picamera2 sizes the bitrate from a
        quality level, picked here from the configured JPEG quality."""
        try:
            from picamera2.encoders import Quality
        except ImportError:
            return None
        q = self.quality
        return (Quality.VERY_HIGH if q >= 90 else Quality.HIGH if q >= 75
                else Quality.MEDIUM if q >= 50 else Quality.LOW)

    @staticmethod
    def _sw_format() -> str:
        version = picamera2_version()
        return "YUV420" if version is not None and version >= JPEG_YUV420_SINCE else "RGB888"

    def _construct(self, picamera2_cls: Any) -> Any:
        """``Picamera2(n)`` without leaking when it fails."""
        try:
            cameras = picamera2_cls.global_camera_info()
        except Exception as exc:
            raise SourceError(f"{self.name}: cannot list cameras ({exc})") from None
        if self.camera_num >= len(cameras):
            found = "no camera" if not cameras else f"only {len(cameras)} camera(s)"
            raise SourceError(f"{self.name}: cannot open camera ({found} connected)")
        cam = picamera2_cls.__new__(picamera2_cls)
        try:
            cam.__init__(self.camera_num)
        except Exception as exc:
            release_failed_camera(cam)
            raise SourceError(f"{self.name}: cannot open camera ({exc})") from None
        return cam

    def open(self) -> None:
        try:
            from picamera2 import Picamera2, encoders  # Pi only: imported when used
        except ImportError:
            raise SourceError("picamera2 is not installed: apt install python3-picamera2 and "
                              "make the venv with --system-site-packages") from None
        self.close()
        self.cam = self._construct(Picamera2)
        try:
            self._start_encoding(encoders)
        except SourceError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise SourceError(f"{self.name}: {exc}") from None

    def _start_encoding(self, encoders: Any) -> None:
        output = _make_output(self._slot, self)
        # picamera2 makes MJPEGEncoder an alias of the software LibavMjpegEncoder where the
        # board has no hardware codec (Pi 5): only the real V4L2 class is hardware
        has_hw = getattr(encoders, "MJPEGEncoder", None) is not None and \
            encoders.MJPEGEncoder.__name__ == "MJPEGEncoder"
        if self.encoder_kind == "hw" and not has_hw:
            raise SourceError(f"{self.name}: this board has no hardware MJPEG encoder "
                              "(use encoder=auto or sw)")
        if has_hw and self.encoder_kind in ("auto", "hw"):
            try:
                self.cam.configure(self._config(self.cam, "YUV420"))
                self.encoder = encoders.MJPEGEncoder()
                try:
                    self.cam.start_encoder(self.encoder, output, quality=self._hw_quality())
                except TypeError:  # picamera2 without the quality argument
                    self.cam.start_encoder(self.encoder, output)
                self.cam.start()
                self.encoder_name, self.stream_format = "hardware MJPEG", "YUV420"
                return
            except SourceError:
                raise
            except Exception as exc:
                if self.encoder_kind == "hw":
                    raise SourceError(f"{self.name}: hardware MJPEG encoder: {exc}") from None
                log.warning("%s: hardware MJPEG encoder did not start (%s); using software "
                            "JPEG", self.name, exc)
                self._stop_quietly()
        fmt = self._sw_format()
        self.cam.configure(self._config(self.cam, fmt))
        self.encoder = encoders.JpegEncoder(q=self.quality)
        # no quality= here: picamera2 would replace q from its own table (80 -> 65)
        self.cam.start_encoder(self.encoder, output)
        self.cam.start()
        self.encoder_name, self.stream_format = f"software JPEG q{self.quality}", fmt

    def open_h264(self, push: Any, bitrate: int, keyframe_every: int) -> str:
        """Open the camera with picamera2's ``H264Encoder`` (the hardware encoder on Pi Zero
        2 W, 3 and 4; libav's libx264 on a Pi 5) and hand each access unit to
        ``push(au, keyframe, sensor_us)`` (``sensor_us``: CLOCK_MONOTONIC µs). Returns what
        runs, for the log."""
        try:
            from picamera2 import Picamera2, encoders
            from picamera2.outputs import Output
        except ImportError:
            raise SourceError("picamera2 is not installed: apt install python3-picamera2 and "
                              "make the venv with --system-site-packages") from None
        self.close()
        self.cam = self._construct(Picamera2)
        source = self

        class PushOutput(Output):  # type: ignore[misc, valid-type]
            def outputframe(self, frame: Any, keyframe: bool = True, timestamp: Any = None,
                            *_args: Any, **_kwargs: Any) -> None:
                first = getattr(source.encoder, "firsttimestamp", None)
                sensor = first + timestamp if isinstance(first, int) and \
                    isinstance(timestamp, int) else None
                source._slot.received += 1
                push(bytes(frame), bool(keyframe), sensor)

        try:
            self.cam.configure(self._config(self.cam, "YUV420"))
            try:  # repeat: SPS/PPS before every keyframe, so a client can join at any one
                self.encoder = encoders.H264Encoder(bitrate=bitrate, repeat=True,
                                                    iperiod=keyframe_every)
            except TypeError:  # picamera2 before iperiod existed
                self.encoder = encoders.H264Encoder(bitrate=bitrate, repeat=True)
            self.cam.start_encoder(self.encoder, PushOutput())
            self.cam.start()
        except Exception as exc:
            self.close()
            raise SourceError(f"{self.name}: H.264 encoder: {exc}") from None
        hw = encoders.H264Encoder.__name__ == "H264Encoder"
        self.encoder_name = "hardware H.264" if hw else "software H.264 (libav libx264)"
        return self.encoder_name

    def sensor_wall_us(self, timestamp: Any) -> int | None:
        """The sensor time of a frame on the wall clock, from the encoder's timestamp
        (µs since its first frame) and its ``firsttimestamp`` (µs, CLOCK_MONOTONIC)."""
        first = getattr(self.encoder, "firsttimestamp", None)
        if not isinstance(timestamp, int) or not isinstance(first, int):
            return None
        mono_us = first + timestamp
        return mono_us + (time.time_ns() - time.monotonic_ns()) // 1000

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
            self.encoder = None
        self._slot.discard()

    def describe(self) -> str:
        w, h = self.size
        fps = f"{self.fps:g} fps" if self.fps else "default fps"
        mode = f", sensor mode {self.mode}" if self.mode is not None else ""
        return f"{self.name} ({w}x{h}, {fps}{mode}, {self.encoder_name})"

    def grab(self) -> None:
        if self.cam is None:
            raise SourceError(f"{self.name}: not open")
        started = time.monotonic()
        item = self._slot.take(self.timeout_s)
        if item is None:
            waited = time.monotonic() - started
            raise SourceError(f"{self.name}: no frame for {waited:.0f}s (camera stalled?)")
        self._current, self._current_ts = item

    def retrieve(self) -> bytes:
        return self._current

    def capture_ts_us(self) -> int | None:
        return self._current_ts


# --- the kind this module runs: picamera2 (the library itself is imported only by open) ---


def _parse_picamera2(raw: str) -> SourceSpec:
    path, options = split_options(raw.partition(":")[2])
    path = path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise SourceConfigError(f"source {raw!r}: picamera2 camera number must be an index")
    return SourceSpec("picamera2", int(path or 0), options, f"picamera2:{path or 0}")


def _build_picamera2(spec: SourceSpec, o: BuildOptions) -> Source:
    # the sensor runs at the sender's fps: frames above it would be encoded to be thrown away
    sensor_fps = spec.opt_float("fps", o.fps)
    if o.fps and (not sensor_fps or sensor_fps > o.fps):
        sensor_fps = o.fps
    return PicameraSource(int(spec.target), name=spec.display, size=o.size or (1280, 720),
                          fps=sensor_fps, mode=spec.opt_int("mode"),
                          encoder=spec.options.get("encoder", "auto"), quality=o.quality,
                          timeout_s=o.timeout_s)


PICAMERA2 = SourceKind("picamera2", ("picamera2:",), _parse_picamera2, _build_picamera2,
                       claims=lambda raw: raw.lower() == "picamera2", hint="picamera2:",
                       order=10)
