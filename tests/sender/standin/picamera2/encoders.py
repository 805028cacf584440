"""Stand-in encoders, chosen the way picamera2's own ``picamera2.encoders`` does.

The real package probes ``/dev/video11`` for the ``bcm2835-codec-encode`` V4L2 device
(present on Pi Zero 2 W, 3 and 4; a Pi 5 has no hardware video encoder). Where the device is
missing, since 0.3.13 the names ``MJPEGEncoder`` and ``H264Encoder`` are aliases of the
software libav encoders, so constructing and starting them succeeds; before 0.3.13 they are
the V4L2 classes, which fail to start. ``JpegEncoder`` (simplejpeg) takes ``q=`` but
``start_encoder(quality=...)`` replaces it from picamera2's own table, and it accepts YUV420
only since 0.3.26 (older versions raise ``KeyError('YUV420')`` in the encoder thread).
"""

from __future__ import annotations

import enum
import os

from picamera2 import version


class Quality(enum.Enum):
    VERY_LOW = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    VERY_HIGH = 4


_HW_BOARDS = ("pi4", "pi3", "zero2w")
_hw_encoder_available = os.environ.get("STANDIN_PICAMERA2_BOARD", "pi4") in _HW_BOARDS


class Encoder:
    def __init__(self) -> None:
        self.firsttimestamp: int | None = None

    def _setup(self, quality: Quality | None) -> None:
        pass

    def _start(self) -> None:
        pass

    def _check_format(self, fmt: str) -> None:
        pass


class _V4L2MJPEGEncoder(Encoder):
    """The V4L2 hardware MJPEG encoder (bcm2835-codec); bitrate-controlled."""

    def __init__(self, bitrate: int | None = None) -> None:
        super().__init__()
        self.bitrate = bitrate

    def _setup(self, quality: Quality | None) -> None:
        if quality is not None or self.bitrate is None:
            table = {0: 16, 1: 20, 2: 30, 3: 40, 4: 50}
            self.bitrate = table[(quality or Quality.MEDIUM).value] * 1_000_000

    def _start(self) -> None:
        if not _hw_encoder_available:
            raise RuntimeError("no V4L2 M2M encoder device found (/dev/video11)")


_V4L2MJPEGEncoder.__name__ = _V4L2MJPEGEncoder.__qualname__ = "MJPEGEncoder"


class _V4L2H264Encoder(_V4L2MJPEGEncoder):
    """The V4L2 hardware H.264 encoder: each output is one access unit."""

    h264 = True

    def __init__(self, bitrate: int | None = None, repeat: bool = False,
                 iperiod: int | None = None, **_kw: object) -> None:
        super().__init__(bitrate)
        self.repeat, self.iperiod = repeat, iperiod


_V4L2H264Encoder.__name__ = _V4L2H264Encoder.__qualname__ = "H264Encoder"


class LibavMjpegEncoder(Encoder):
    """libav's software MJPEG encoder (frame-threaded: it holds frames)."""

    def __init__(self, bitrate: int | None = None, **_kw: object) -> None:
        super().__init__()
        self.bitrate = bitrate


class LibavH264Encoder(LibavMjpegEncoder):
    """libav's software H.264 encoder (libx264)."""

    h264 = True

    def __init__(self, bitrate: int | None = None, repeat: bool = True,
                 iperiod: int | None = None, **_kw: object) -> None:
        super().__init__(bitrate)
        self.repeat, self.iperiod = repeat, iperiod


class JpegEncoder(Encoder):
    """picamera2's software JPEG encoder (simplejpeg)."""

    def __init__(self, num_threads: int = 4, q: int | None = None, **_kw: object) -> None:
        super().__init__()
        self.q = q

    def _setup(self, quality: Quality | None) -> None:
        if quality is not None or self.q is None:
            table = {0: 25, 1: 35, 2: 50, 3: 65, 4: 80}
            self.q = table[(quality or Quality.MEDIUM).value]

    def _check_format(self, fmt: str) -> None:
        formats = {"XBGR8888", "XRGB8888", "BGR888", "RGB888"}
        if version() >= (0, 3, 26):
            formats.add("YUV420")
        if fmt not in formats:
            raise KeyError(fmt)


if _hw_encoder_available or version() < (0, 3, 13):
    MJPEGEncoder: type[Encoder] = _V4L2MJPEGEncoder
    H264Encoder: type[Encoder] = _V4L2H264Encoder
else:
    MJPEGEncoder = LibavMjpegEncoder
    H264Encoder = LibavH264Encoder
