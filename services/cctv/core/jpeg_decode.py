"""Decode a frame's JPEG bytes safely: header checks first, every decoder failure one error.

Every service that decodes frames (inference, web, events) goes through :func:`decode_jpeg`,
so a frame that OpenCV cannot or should not decode raises :class:`~cctv.core.jpeg.JpegError`
(never ``cv2.error``, never a huge allocation) and costs the caller one counted drop.
"""

from __future__ import annotations

import cv2
import numpy as np

from cctv.core.jpeg import FrameLimits, JpegError, jpeg_info


def decode_jpeg(data: bytes, limits: FrameLimits | None = None) -> np.ndarray:
    """The BGR image of ``data``; raises :class:`JpegError` when it must not or does not
    decode (header refused by :func:`jpeg_info`, decoder error, nothing decoded, or a size
    other than the header said)."""
    info = jpeg_info(data, limits)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise JpegError(f"JPEG does not decode: {str(exc).strip()[-120:]}") from None
    if img is None or img.ndim != 3 or img.shape[2] != 3:
        raise JpegError("JPEG does not decode")
    # (EXIF orientation may have turned the image by 90 degrees)
    if sorted(img.shape[:2]) != sorted((info.width, info.height)):
        raise JpegError(f"JPEG decoded to {img.shape[1]}x{img.shape[0]}, its header says "
                        f"{info.width}x{info.height}")
    return img
