"""MJPEG framing: the parts of a ``multipart/x-mixed-replace`` stream (live feeds, event clips)."""

from __future__ import annotations

#: the multipart boundary of every MJPEG stream the services serve
BOUNDARY = "frame"
#: the stream's Content-Type
MIMETYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"


def mjpeg_part(jpeg: bytes) -> bytes:
    """One part of a ``multipart/x-mixed-replace`` MJPEG stream holding ``jpeg``."""
    return (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(jpeg)}\r\n\r\n").encode() + jpeg + b"\r\n"
