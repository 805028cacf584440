"""JPEG header checks without decoding the image.

Ingest checks every frame here before storing it, and every consumer checks again before it
decodes (an entry may have been written around ingest). What passes is a JPEG that OpenCV's
decoder takes without a surprise: one baseline, extended or progressive Huffman frame header
with 8-bit samples, 1 (grey) or 3 (colour) components and a size within :class:`FrameLimits`.
Everything else (arithmetic coding, lossless, hierarchical, 12-bit, CMYK, a second frame header,
a size OpenCV would refuse or that would need gigabytes to decode) is refused with a reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Start-of-frame markers (every coding process): baseline, extended, progressive, lossless,
# hierarchical variants and the arithmetic-coded ones.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
#: the frame types accepted: baseline, extended sequential and progressive, Huffman-coded
SUPPORTED_SOF = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive"}
_SOF_NAMES = {0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical progressive",
              0xC7: "hierarchical lossless", 0xC9: "arithmetic", 0xCA: "arithmetic progressive",
              0xCB: "arithmetic lossless", 0xCD: "hierarchical arithmetic",
              0xCE: "hierarchical arithmetic progressive",
              0xCF: "hierarchical arithmetic lossless"}
# Markers without a length field.
_STANDALONE = {0x01, *range(0xD0, 0xD8)}
# Inside entropy-coded data 0xFF is followed only by 0x00 (stuffing) or a restart marker, so a
# frame-header marker after the first scan is a second frame (hierarchical JPEG, or forged).
_LATER_SOF = re.compile(rb"\xff[\xc0-\xc3\xc5-\xc7\xc9-\xcb\xcd-\xcf]")


class JpegError(ValueError):
    """The bytes are not a JPEG image that may be decoded; ``kind`` says why:
    ``malformed`` (not a complete JPEG), ``unsupported`` (a JPEG variant refused) or
    ``too_large`` (dimensions over the limits)."""

    def __init__(self, message: str, kind: str = "malformed") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class FrameLimits:
    """The largest frame accepted (``CCTV_MAX_FRAME_WIDTH``/``_HEIGHT``/``_PIXELS``)."""

    max_width: int = 8192
    max_height: int = 8192
    max_pixels: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class JpegInfo:
    """What the frame header says."""

    width: int
    height: int
    components: int
    sof: str


def jpeg_info(data: bytes | memoryview, limits: FrameLimits | None = None) -> JpegInfo:
    """Check a JPEG's markers and frame header; return what the header says.

    Checks SOI at the start, EOI at the end, walks the marker segments up to the first scan
    and checks the frame header (type, precision, components, size within ``limits``, default
    :class:`FrameLimits`), then that no second frame header follows. Raises :class:`JpegError`.
    """
    limits = limits or FrameLimits()
    buf = memoryview(data)
    n = len(buf)
    if n < 4:
        raise JpegError("body too short to be a JPEG")
    if buf[0] != 0xFF or buf[1] != 0xD8:
        raise JpegError("missing JPEG start-of-image marker (not a JPEG)")
    # Some encoders pad after EOI; accept up to 16 trailing bytes.
    tail = bytes(buf[max(0, n - 18):])
    if b"\xff\xd9" not in tail:
        raise JpegError("missing JPEG end-of-image marker (truncated)")
    info: JpegInfo | None = None
    i = 2
    while i + 4 <= n:
        if buf[i] != 0xFF:
            raise JpegError(f"corrupt JPEG: expected a marker at byte {i}")
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker == 0xD9:
            break
        seg_len = (buf[i + 2] << 8) | buf[i + 3]
        if seg_len < 2 or i + 2 + seg_len > n:
            raise JpegError("corrupt JPEG: segment runs past the end")
        if marker == 0xDA:
            if info is None:
                raise JpegError("corrupt JPEG: image data before the frame header")
            if _LATER_SOF.search(buf, i + 2 + seg_len):
                raise JpegError("JPEG has more than one frame header", "unsupported")
            return info
        if marker in _SOF_MARKERS:
            if info is not None:
                raise JpegError("JPEG has more than one frame header", "unsupported")
            info = _frame_header(buf[i + 4:i + 2 + seg_len], marker, limits)
        i += 2 + seg_len
    if info is None:
        raise JpegError("no JPEG frame header before the image data")
    raise JpegError("corrupt JPEG: no image data after the frame header")


def _frame_header(seg: memoryview, marker: int, limits: FrameLimits) -> JpegInfo:
    if marker not in SUPPORTED_SOF:
        raise JpegError(f"{_SOF_NAMES.get(marker, 'unknown')} JPEG (frame type 0x{marker:02X}) "
                        "is not supported; send baseline or progressive JPEG", "unsupported")
    if len(seg) < 6:
        raise JpegError("corrupt JPEG: short frame header")
    precision = seg[0]
    height = (seg[1] << 8) | seg[2]
    width = (seg[3] << 8) | seg[4]
    ncomp = seg[5]
    if precision != 8:
        raise JpegError(f"{precision}-bit JPEG is not supported; send 8-bit", "unsupported")
    if width == 0 or height == 0:
        raise JpegError("JPEG frame header has zero size")
    if ncomp not in (1, 3):
        raise JpegError(f"JPEG with {ncomp} components is not supported; send grey (1) or "
                        "colour (3)", "unsupported")
    if len(seg) != 6 + 3 * ncomp:
        raise JpegError("corrupt JPEG: frame header length does not match its components")
    ids = set()
    for c in range(ncomp):
        cid, sampling, table = seg[6 + 3 * c], seg[7 + 3 * c], seg[8 + 3 * c]
        if not (1 <= sampling >> 4 <= 4 and 1 <= sampling & 15 <= 4) or table > 3 or cid in ids:
            raise JpegError("corrupt JPEG: invalid component in the frame header")
        ids.add(cid)
    if width > limits.max_width or height > limits.max_height \
            or width * height > limits.max_pixels:
        raise JpegError(f"frame of {width}x{height} is over the limit of {limits.max_width}x"
                        f"{limits.max_height} and {limits.max_pixels} pixels", "too_large")
    return JpegInfo(width, height, ncomp, SUPPORTED_SOF[marker])


def jpeg_dimensions(data: bytes | memoryview,
                    limits: FrameLimits | None = None) -> tuple[int, int]:
    """``(width, height)`` of a JPEG that passes :func:`jpeg_info`."""
    info = jpeg_info(data, limits)
    return info.width, info.height
