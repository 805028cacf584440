"""A stand-in for the hardware side of picamera2, for tests off the Pi.

It implements the small part of the picamera2 API the sender uses (``Picamera2``,
``sensor_modes``, ``create_video_configuration``, ``configure``, ``start_encoder``,
``start``, ``stop_encoder``, ``stop``, ``close``) and produces frames from a JPEG file on a
thread, as the real encoder thread does. Knobs (environment):

* ``STANDIN_PICAMERA2_JPEG``: the JPEG every frame carries (required)
* ``STANDIN_PICAMERA2_LOG``: a file to which each call is appended as one JSON line
* ``STANDIN_PICAMERA2_NO_HW=1``: the hardware MJPEG encoder fails to start (like a Pi 5)
* ``STANDIN_PICAMERA2_STALL_AFTER=N``: each opened camera stops after N frames
"""

from __future__ import annotations

import json
import os
import threading
import time
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


class Picamera2:
    """One camera: frames at the configured FrameRate go to the running encoder's output."""

    def __init__(self, camera_num: int = 0) -> None:
        if camera_num != 0:
            raise IndexError("list index out of range")
        self.camera_num = camera_num
        self.sensor_modes = [dict(m) for m in _SENSOR_MODES]
        self.config: dict[str, Any] | None = None
        self._encoder: Any = None
        self._output: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with open(os.environ["STANDIN_PICAMERA2_JPEG"], "rb") as fh:
            self._jpeg = fh.read()
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
        encoder._start()
        self._encoder, self._output = encoder, output
        output.start()
        _log("start_encoder", encoder=type(encoder).__name__, quality=quality)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fps = float((self.config or {}).get("controls", {}).get("FrameRate") or 30.0)
        stall_after = int(os.environ.get("STANDIN_PICAMERA2_STALL_AFTER", "0") or 0)
        sent = 0
        next_t = time.monotonic()
        while not self._stop.is_set():
            if stall_after and sent >= stall_after:
                self._stop.wait(0.05)
                continue
            if self._output is not None and self._output.recording:
                self._output.outputframe(self._jpeg, True, int(time.monotonic() * 1e6))
                sent += 1
            next_t += 1.0 / fps
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def stop_encoder(self) -> None:
        if self._output is not None:
            self._output.stop()
        self._encoder = None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None

    def close(self) -> None:
        self.stop()
        _log("close")
