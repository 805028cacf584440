"""A stand-in for the hardware side of picamera2, for tests off the Pi.

It models the parts of picamera2 (0.3.12 to 0.3.36) the sender touches, with the same
behaviour the real library has on each board, including its flaws:

* ``Picamera2(n)`` creates its notification pipe before it looks the camera up, so a
  constructor that fails (no camera: ``IndexError``; busy camera: ``RuntimeError``) leaves
  that pipe open, and for a busy camera the half-made object stays registered with the camera
  manager; ``close()`` returns at once for a camera that never opened.
* ``Picamera2.global_camera_info()`` lists cameras without opening one.
* The encoder's ``outputframe`` timestamps are microseconds since the encoder's first frame;
  the encoder keeps the sensor time of that first frame in ``firsttimestamp``.
* The board and version pick the encoders (see :mod:`picamera2.encoders`).

Knobs (environment):

* ``STANDIN_PICAMERA2_JPEG``: the JPEG every frame carries (required)
* ``STANDIN_PICAMERA2_LOG``: a file to which each call is appended as one JSON line
* ``STANDIN_PICAMERA2_BOARD``: ``pi4`` (default), ``pi3``, ``zero2w`` (hardware codec) or
  ``pi5`` (no hardware video encoder)
* ``STANDIN_PICAMERA2_CAMERAS``: how many cameras are connected (default 1)
* ``STANDIN_PICAMERA2_BUSY=1``: the camera is in use by another process
* ``STANDIN_PICAMERA2_STALL_AFTER=N``: each opened camera stops after N frames
* ``STANDIN_PICAMERA2_GONE_AFTER=N``: after N frames in this process the camera is
  unplugged: the stream stops and ``global_camera_info()`` no longer lists it
* ``STANDIN_PICAMERA2_H264``: an H.264 Annex-B file with access unit delimiters; the H.264
  encoders output its access units in turn (one per sensor frame)
* ``STANDIN_PICAMERA2_ENCODE_MS``: how long the encoder holds a frame before output
  (default 0; the Pi 5 libav path holds several frames)

The version is read from the package metadata (``picamera2-<version>.dist-info`` next to
this package on the path), exactly as the sender reads the real one.
"""

from __future__ import annotations

import json
import os
import threading
import time
from importlib import metadata
from typing import Any

_SENSOR_MODES = [
    {"size": (1332, 990), "bit_depth": 10, "fps": 120.03, "format": "SRGGB10_CSI2P"},
    {"size": (2028, 1080), "bit_depth": 12, "fps": 50.03, "format": "SRGGB12_CSI2P"},
    {"size": (4056, 3040), "bit_depth": 12, "fps": 10.0, "format": "SRGGB12_CSI2P"},
]


def _log(event: str, **fields: Any) -> None:
    path = os.environ.get("STANDIN_PICAMERA2_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"event": event, **fields}, default=str) + "\n")


def version() -> tuple[int, ...]:
    """The stand-in's version, from its package metadata (0.3.30 when none is installed)."""
    try:
        raw = metadata.version("picamera2")
    except metadata.PackageNotFoundError:
        raw = "0.3.30"
    return tuple(int(x) for x in raw.split(".")[:3])


def _access_units(stream: bytes) -> list[tuple[bytes, bool]]:
    """Split an Annex-B stream at its access unit delimiters (NAL type 9); (AU, keyframe)."""
    marks = []
    i = stream.find(b"\x00\x00\x01")
    while i >= 0:
        if i + 3 < len(stream) and stream[i + 3] & 0x1F == 9:
            marks.append(i - 1 if i > 0 and stream[i - 1] == 0 else i)
        i = stream.find(b"\x00\x00\x01", i + 3)
    marks.append(len(stream))
    units = []
    for a, b in zip(marks, marks[1:], strict=False):
        au = stream[a:b]
        key = False
        j = au.find(b"\x00\x00\x01")
        while j >= 0 and j + 3 < len(au):
            key = key or au[j + 3] & 0x1F == 5
            j = au.find(b"\x00\x00\x01", j + 3)
        units.append((au, key))
    return units


class _CameraManager:
    """Like picamera2's CameraManager: holds every camera object that got as far as
    registering, until ``cleanup``."""

    def __init__(self) -> None:
        self.cameras: dict[int, Any] = {}

    def add(self, index: int, camera: Any) -> None:
        self.cameras[index] = camera

    def cleanup(self, index: int) -> None:
        del self.cameras[index]


class Picamera2:
    """One camera: frames at the configured FrameRate go to the running encoder's output."""

    _cm = _CameraManager()
    _frames_in_process = 0

    @staticmethod
    def _gone() -> bool:
        after = int(os.environ.get("STANDIN_PICAMERA2_GONE_AFTER", "0") or 0)
        return bool(after) and Picamera2._frames_in_process >= after

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        n = int(os.environ.get("STANDIN_PICAMERA2_CAMERAS", "1") or 0)
        if Picamera2._gone():
            n = 0
        return [{"Model": "imx477", "Location": 2, "Rotation": 0, "Id": f"/base/cam{i}",
                 "Num": i} for i in range(n)]

    def __init__(self, camera_num: int = 0, tuning: Any = None) -> None:
        # the order of the real constructor: the pipe first, then the camera lookup
        self.notifyme_r, self.notifyme_w = os.pipe2(os.O_NONBLOCK)
        self.notifymeread = os.fdopen(self.notifyme_r, "rb")
        self._preview = None
        self.is_open = False
        _log("construct", camera=camera_num)
        camera_num = self.global_camera_info()[camera_num]["Num"]  # IndexError: no camera
        self._cm.add(camera_num, self)
        self.camera_idx = camera_num
        if os.environ.get("STANDIN_PICAMERA2_BUSY") == "1":
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self.is_open = True
        self.camera_num = camera_num
        self.sensor_modes = [dict(m) for m in _SENSOR_MODES]
        self.config: dict[str, Any] | None = None
        self._encoder: Any = None
        self._output: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.produced = 0
        with open(os.environ["STANDIN_PICAMERA2_JPEG"], "rb") as fh:
            self._jpeg = fh.read()
        self._h264: list[tuple[bytes, bool]] = []
        if os.environ.get("STANDIN_PICAMERA2_H264"):
            with open(os.environ["STANDIN_PICAMERA2_H264"], "rb") as fh:
                self._h264 = _access_units(fh.read())
        _log("open", camera=camera_num)

    def create_video_configuration(self, main: dict | None = None, controls: dict | None = None,
                                   buffer_count: int = 6, sensor: dict | None = None,
                                   **_other: Any) -> dict[str, Any]:
        return {"main": dict(main or {}), "controls": dict(controls or {}),
                "buffer_count": buffer_count, "sensor": dict(sensor or {})}

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config
        _log("configure", config=config)

    def start_encoder(self, encoder: Any, output: Any, pts: Any = None, quality: Any = None,
                      name: str = "main") -> None:
        if self.config is None:
            raise RuntimeError("camera not configured")
        encoder._setup(quality)
        encoder._start()
        self._encoder, self._output = encoder, output
        output.start()
        _log("start_encoder", encoder=type(encoder).__name__, quality=quality,
             q=getattr(encoder, "q", None), format=self.config["main"].get("format"))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fps = float((self.config or {}).get("controls", {}).get("FrameRate") or 30.0)
        stall_after = int(os.environ.get("STANDIN_PICAMERA2_STALL_AFTER", "0") or 0)
        hold_s = float(os.environ.get("STANDIN_PICAMERA2_ENCODE_MS", "0") or 0) / 1000
        fmt = (self.config or {}).get("main", {}).get("format", "YUV420")
        held: list[int] = []   # sensor times (µs, CLOCK_MONOTONIC) waiting in the encoder
        next_t = time.monotonic()
        while not self._stop.is_set():
            if (stall_after and self.produced >= stall_after) or self._gone():
                self._stop.wait(0.05)
                continue
            sensor_us = time.monotonic_ns() // 1000
            encoder, output = self._encoder, self._output
            if encoder is not None and output is not None and output.recording:
                try:
                    encoder._check_format(fmt)
                except KeyError as exc:
                    # the real encoder thread dies with this and no frame ever comes
                    _log("encoder_thread_died", error=repr(exc))
                    return
                self.produced += 1
                Picamera2._frames_in_process += 1
                held.append(sensor_us)
                while held and held[0] <= sensor_us - hold_s * 1e6:
                    first = held.pop(0)
                    if encoder.firsttimestamp is None:
                        encoder.firsttimestamp = first
                    n = self.produced - len(held)
                    _log("sensor_frame", sensor_us=first, n=n,
                         out_us=time.monotonic_ns() // 1000)
                    if getattr(encoder, "h264", False):
                        au, key = self._h264[(n - 1) % len(self._h264)]
                        output.outputframe(au, key, first - encoder.firsttimestamp)
                    else:
                        output.outputframe(self._jpeg, True, first - encoder.firsttimestamp)
            next_t += 1.0 / fps
            self._stop.wait(max(0.0, next_t - time.monotonic()))
        _log("produced", n=self.produced, held=len(held))

    def stop_encoder(self) -> None:
        if self._output is not None:
            self._output.stop()
        self._encoder = None

    def stop(self) -> None:
        if self.is_open:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(2)
                self._thread = None

    def close(self) -> None:
        if not self.is_open:
            return  # as the real one: nothing released for a camera that never opened
        self.stop()
        self.is_open = False
        self._cm.cleanup(self.camera_idx)
        self.notifymeread.close()
        os.close(self.notifyme_w)
        _log("close")
