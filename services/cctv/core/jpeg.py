"""JPEG header checks without decoding the image."""

from __future__ import annotations

# Start-of-frame markers carrying the image size (baseline, extended, progressive, lossless...).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Markers without a length field.
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


class JpegError(ValueError):
    """The bytes are not a complete JPEG image."""


def jpeg_dimensions(data: bytes | memoryview) -> tuple[int, int]:
    """Return ``(width, height)`` of a JPEG after checking its markers.

    Checks SOI at the start, EOI at the end and walks the marker segments up to the
    start-of-frame header. Raises :class:`JpegError` with a short reason otherwise.
    """
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
        if marker in (0xD9, 0xDA):
            break
        seg_len = (buf[i + 2] << 8) | buf[i + 3]
        if seg_len < 2 or i + 2 + seg_len > n:
            raise JpegError("corrupt JPEG: segment runs past the end")
        if marker in _SOF_MARKERS:
            if seg_len < 7:
                raise JpegError("corrupt JPEG: short frame header")
            height = (buf[i + 5] << 8) | buf[i + 6]
            width = (buf[i + 7] << 8) | buf[i + 8]
            if width == 0 or height == 0:
                raise JpegError("JPEG frame header has zero size")
            return width, height
        i += 2 + seg_len
    raise JpegError("no JPEG frame header before the image data")
