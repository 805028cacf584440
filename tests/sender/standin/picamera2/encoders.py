"""Stand-in encoders: the hardware one can be made to fail (STANDIN_PICAMERA2_NO_HW=1)."""

from __future__ import annotations

import enum
import os


class Quality(enum.Enum):
    VERY_LOW = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    VERY_HIGH = 4


class Encoder:
    def _start(self) -> None:
        pass


class MJPEGEncoder(Encoder):
    """The V4L2 hardware MJPEG encoder of a Pi 4."""

    def __init__(self, bitrate: int | None = None) -> None:
        self.bitrate = bitrate

    def _start(self) -> None:
        if os.environ.get("STANDIN_PICAMERA2_NO_HW") == "1":
            raise RuntimeError("no V4L2 M2M encoder device found")


class JpegEncoder(Encoder):
    """picamera2's software JPEG encoder (simplejpeg)."""

    def __init__(self, num_threads: int = 4, q: int | None = None, **_kw: object) -> None:
        self.q = q
