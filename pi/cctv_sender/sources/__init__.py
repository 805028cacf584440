"""Camera sources chosen by a URL-like string; see :func:`parse_source` for the forms."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from cctv_sender.sources.base import Source, SourceEnded, SourceError

__all__ = ["Source", "SourceEnded", "SourceError", "SourceSpec", "parse_source", "build_source"]


class SourceConfigError(ValueError):
    """The source string cannot be understood; the message says why."""


KINDS = ("file", "v4l2", "rtsp", "http", "picamera2")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source string: kind, target (path, URL or index) and options."""

    kind: str
    target: str | int
    options: dict[str, str] = field(default_factory=dict)
    display: str = ""

    def opt_float(self, name: str, default: float = 0.0) -> float:
        """Option ``name`` as a float (``SourceConfigError`` if it is not one)."""
        raw = self.options.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SourceConfigError(f"source option {name}={raw!r} must be a number") from None
        if value < 0:
            raise SourceConfigError(f"source option {name}={raw!r} must not be negative")
        return value

    def opt_int(self, name: str, default: int | None = None) -> int | None:
        """Option ``name`` as a non-negative int."""
        raw = self.options.get(name)
        if raw is None or raw == "":
            return default
        if not (raw.isascii() and raw.isdigit()):
            raise SourceConfigError(f"source option {name}={raw!r} must be a whole number")
        return int(raw)

    def opt_bool(self, name: str, default: bool = False) -> bool:
        """Option ``name`` as a boolean (1/0, true/false, yes/no, on/off)."""
        raw = self.options.get(name)
        if raw is None or raw == "":
            return default
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise SourceConfigError(f"source option {name}={raw!r} must be true or false")

    def opt_size(self, name: str = "size") -> tuple[int, int] | None:
        """Option ``name`` written ``WIDTHxHEIGHT``."""
        raw = self.options.get(name)
        if not raw:
            return None
        return parse_size(raw, f"source option {name}")


_SIZE_RE = re.compile(r"^(\d{2,5})[xX*](\d{2,5})$")


def parse_size(raw: str, what: str) -> tuple[int, int]:
    """``"1280x720"`` -> ``(1280, 720)``; ``SourceConfigError`` naming ``what`` otherwise."""
    m = _SIZE_RE.match(raw.strip())
    if not m:
        raise SourceConfigError(f"{what}={raw!r} must be written WIDTHxHEIGHT, e.g. 1280x720")
    return int(m.group(1)), int(m.group(2))


def redact(url: str) -> str:
    """The URL without its password, for logs and status."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, f"{parts.username or ''}:***@{host}", parts.path,
                       parts.query, parts.fragment))


def _split_options(rest: str) -> tuple[str, dict[str, str]]:
    path, _, query = rest.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    return path, options


def parse_source(raw: str) -> SourceSpec:
    """Parse a source string. Accepted forms:

    * ``picamera2:`` or ``picamera2:1?size=1280x720&fps=15&mode=1&encoder=hw`` (camera number,
      output size, frame rate, sensor mode index, hardware or software JPEG encoder)
    * ``v4l2:/dev/video0``, ``v4l2:0``, a bare ``/dev/video0`` or webcam index ``0``
      (options ``size``, ``fps``, ``fourcc`` (default MJPG), ``passthrough=1``)
    * ``rtsp://user:pass@host:554/stream`` (and ``rtsps://``)
    * ``http://host:8080/?action=stream``: an MJPEG stream (multipart/x-mixed-replace) or a
      JPEG snapshot URL polled at the fps limit (and ``https://``)
    * ``file:/path/clip.mp4?fps=10&loop=1`` or a bare path (``fps``: pace in frames/s,
      default the file's own rate, ``fps=0``/``realtime=0`` as fast as possible)

    HTTP and RTSP URLs are used as they are (their query belongs to the camera).
    """
    raw = raw.strip()
    if not raw:
        raise SourceConfigError("no camera source given (--source or CCTV_SENDER_SOURCE)")
    low = raw.lower()
    if low.startswith(("rtsp://", "rtsps://")):
        if not urlsplit(raw).hostname:
            raise SourceConfigError(f"source {redact(raw)!r}: RTSP URL has no host")
        return SourceSpec("rtsp", raw, {}, redact(raw))
    if low.startswith(("http://", "https://")):
        if not urlsplit(raw).hostname:
            raise SourceConfigError(f"source {redact(raw)!r}: HTTP URL has no host")
        return SourceSpec("http", raw, {}, redact(raw))
    if low.startswith("picamera2:") or low == "picamera2":
        path, options = _split_options(raw.partition(":")[2])
        path = path.strip("/")
        if path and not (path.isascii() and path.isdigit()):
            raise SourceConfigError(f"source {raw!r}: picamera2 camera number must be an index")
        return SourceSpec("picamera2", int(path or 0), options, f"picamera2:{path or 0}")
    if low.startswith("v4l2:"):
        path, options = _split_options(raw[5:])
        if not path:
            raise SourceConfigError(f"source {raw!r}: give a device, e.g. v4l2:/dev/video0")
        target: str | int = int(path) if path.isascii() and path.isdigit() else path
        return SourceSpec("v4l2", target, options, f"v4l2:{path}")
    if raw.isascii() and raw.isdigit():
        return SourceSpec("v4l2", int(raw), {}, f"v4l2:{raw}")
    if low.startswith("/dev/video"):
        return SourceSpec("v4l2", raw, {}, f"v4l2:{raw}")
    if low.startswith("file:"):
        rest = raw[5:]
        if rest.startswith("//"):
            rest = rest[2:]
        path, options = _split_options(rest)
    elif re.match(r"^[a-z][a-z0-9+.-]*://", low):
        raise SourceConfigError(
            f"source {redact(raw)!r}: unknown scheme; use picamera2:, v4l2:, rtsp://, "
            "http:// or file:")
    else:
        path, options = _split_options(raw)
    if not path:
        raise SourceConfigError(f"source {raw!r}: no file path")
    path = os.path.expanduser(path)
    return SourceSpec("file", path, options, f"file:{os.path.basename(path)}")


def build_source(spec: SourceSpec, *, quality: int = 80, loop: bool = False,
                 size: tuple[int, int] | None = None, timeout_s: float = 10.0,
                 fps: float = 0.0) -> Source:
    """The :class:`Source` for ``spec``; ``loop``/``size`` are defaults that URL options
    override, ``fps`` (the sender's limit) is the frame rate asked of cameras that take one
    (picamera2, V4L2) unless the URL sets its own; a Pi camera never runs faster than
    ``fps``. Imports the camera library only for the
    kind that needs it."""
    size = spec.opt_size() or size
    quality = spec.opt_int("quality", quality) or quality
    if not 1 <= quality <= 100:
        raise SourceConfigError(f"JPEG quality {quality} must be between 1 and 100")
    if spec.kind == "file":
        from cctv_sender.sources.opencv import OpenCVSource
        pace = spec.opt_float("fps", 0.0)
        realtime = spec.opt_bool("realtime", True) and spec.options.get("fps") != "0"
        return OpenCVSource("file", spec.target, name=spec.display, quality=quality, size=size,
                            fps=pace, loop=spec.opt_bool("loop", loop), paced=realtime)
    if spec.kind in ("v4l2", "rtsp"):
        from cctv_sender.sources.opencv import OpenCVSource
        return OpenCVSource(spec.kind, spec.target, name=spec.display, quality=quality,
                            size=size, fps=spec.opt_float("fps", fps if spec.kind == "v4l2"
                                                          else 0.0),
                            fourcc=spec.options.get("fourcc", "MJPG" if spec.kind == "v4l2"
                                                    else ""),
                            passthrough=spec.opt_bool("passthrough"), timeout_s=timeout_s)
    if spec.kind == "http":
        from cctv_sender.sources.mjpeg import MjpegSource
        return MjpegSource(str(spec.target), name=spec.display, timeout_s=timeout_s)
    if spec.kind == "picamera2":
        from cctv_sender.sources.picam import PicameraSource
        # the sensor runs at the sender's fps: frames above it would be encoded to be
        # thrown away
        sensor_fps = spec.opt_float("fps", fps)
        if fps and (not sensor_fps or sensor_fps > fps):
            sensor_fps = fps
        return PicameraSource(int(spec.target), name=spec.display, size=size or (1280, 720),
                              fps=sensor_fps, mode=spec.opt_int("mode"),
                              encoder=spec.options.get("encoder", "auto"), quality=quality,
                              timeout_s=timeout_s)
    raise SourceConfigError(f"unknown source kind {spec.kind!r}")
