"""Camera sources chosen by a URL-like string; see :func:`parse_source` for the forms.

Each kind of source is a plugin: a module of this package that defines module-level
:class:`SourceKind` values (the prefixes it takes, how it parses the rest of the string and how
it builds the :class:`Source`). Every module of the package is imported on first use and its
kinds registered; a new kind is one new file here (see docs/extending.md). :func:`register` is
the same call the scan makes.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from cctv_sender.sources.base import Source, SourceEnded, SourceError

__all__ = ["Source", "SourceEnded", "SourceError", "SourceSpec", "SourceKind", "BuildOptions",
           "parse_source", "build_source", "register", "kinds"]


class SourceConfigError(ValueError):
    """The source string cannot be understood; the message says why."""


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


def split_options(rest: str) -> tuple[str, dict[str, str]]:
    """``"path?a=1&b=2"`` -> ``("path", {"a": "1", "b": "2"})``."""
    path, _, query = rest.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    return path, options


@dataclass(frozen=True)
class BuildOptions:
    """The sender's defaults for a source: JPEG quality (already checked), loop, output size
    (the URL's ``size`` already applied), open/read timeout and the sender's fps limit."""

    quality: int = 80
    loop: bool = False
    size: tuple[int, int] | None = None
    timeout_s: float = 10.0
    fps: float = 0.0


@dataclass(frozen=True)
class SourceKind:
    """One kind of camera source.

    ``prefixes``: lower-case string starts it takes (``"rtsp://"``, ``"v4l2:"``); ``parse(raw)``
    turns the whole (stripped) source string into a :class:`SourceSpec` whose ``kind`` is
    ``kind``; ``build(spec, options)`` returns the :class:`Source`, importing its camera library
    only then. ``claims(raw)`` takes strings without a known prefix (a bare ``/dev/video0``);
    the one ``fallback`` kind takes what nothing else does (a bare file path). ``hint`` is how
    the error for an unknown scheme names it (``rtsp://``); ``order`` sorts those hints.
    """

    kind: str
    prefixes: tuple[str, ...]
    parse: Callable[[str], SourceSpec]
    build: Callable[[SourceSpec, BuildOptions], Source]
    claims: Callable[[str], bool] | None = None
    fallback: bool = False
    hint: str = ""
    order: int = 100


_registry: dict[str, SourceKind] = {}
_imported: set[str] = set()


def register(kind: SourceKind) -> SourceKind:
    """Register ``kind`` under its name (a later one with the same name replaces it)."""
    _registry[kind.kind] = kind
    return kind


def kinds() -> dict[str, SourceKind]:
    """Every registered source kind by name. Imports the modules of this package not imported
    yet (a folder added to ``__path__`` is seen on the next call). The services' plugins use
    ``cctv/core/plugins.py`` for this; the sender keeps its own few lines (it depends on
    nothing of the services)."""
    for info in pkgutil.iter_modules(__path__, __name__ + "."):
        if info.name in _imported:
            continue
        _imported.add(info.name)
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, SourceKind):
                register(value)
    return dict(_registry)


def __getattr__(name: str) -> object:
    if name == "KINDS":  # the registered kind names, for status and error texts
        return tuple(k.kind for k in sorted(kinds().values(), key=lambda k: k.order))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    * any other kind registered by a module of this package

    HTTP and RTSP URLs are used as they are (their query belongs to the camera).
    """
    raw = raw.strip()
    if not raw:
        raise SourceConfigError("no camera source given (--source or CCTV_SENDER_SOURCE)")
    low = raw.lower()
    known = list(kinds().values())
    for kind in known:
        if low.startswith(kind.prefixes):
            return kind.parse(raw)
    for kind in known:
        if kind.claims is not None and kind.claims(raw):
            return kind.parse(raw)
    fallback = next((k for k in known if k.fallback), None)
    if fallback is None or re.match(r"^[a-z][a-z0-9+.-]*://", low):
        hints = [k.hint for k in sorted(known, key=lambda k: k.order) if k.hint]
        raise SourceConfigError(
            f"source {redact(raw)!r}: unknown scheme; use {', '.join(hints[:-1])} "
            f"or {hints[-1]}")
    return fallback.parse(raw)


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
    kind = kinds().get(spec.kind)
    if kind is None:
        raise SourceConfigError(f"unknown source kind {spec.kind!r}")
    return kind.build(spec, BuildOptions(quality=quality, loop=loop, size=size,
                                         timeout_s=timeout_s, fps=fps))
