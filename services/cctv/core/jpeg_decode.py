"""Decode a frame's JPEG bytes safely: header checks first, every decoder failure one error.

Every service that decodes frames (inference, web, events) goes through :func:`decode_jpeg`,
so a frame that OpenCV cannot or should not decode raises :class:`~cctv.core.jpeg.JpegError`
(never ``cv2.error``, never a huge allocation) and costs the caller one counted drop.
"""

from __future__ import annotations

import cv2
import numpy as np

from cctv.core.jpeg import FrameLimits, JpegError, jpeg_info

#: OpenCV's flags for decoding at 1/2, 1/4, 1/8 of the size (libjpeg scales in the DCT)
_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_jpeg(data: bytes, limits: FrameLimits | None = None) -> np.ndarray:
    """The BGR image of ``data``; raises :class:`JpegError` when it must not or does not
    decode (header refused by :func:`jpeg_info`, decoder error, nothing decoded, or a size
    other than the header said)."""
    return decode_jpeg_at(data, limits)[0]


def decode_jpeg_at(data: bytes, limits: FrameLimits | None = None, min_side: int = 0
                   ) -> tuple[np.ndarray, tuple[int, int]]:
    """The BGR image of ``data``, decoded at 1/2, 1/4 or 1/8 of its size when the image's
    longer side stays at least ``min_side`` (0: full size), and the full size (width, height,
    as the decoded image is turned). Decoding smaller is several times cheaper, and loses
    nothing for a model that scales the longer side to ``min_side`` anyway. Errors as
    :func:`decode_jpeg`."""
    info = jpeg_info(data, limits)
    factor = 1
    while factor < 8 and min_side and max(info.width, info.height) // (factor * 2) >= min_side:
        factor *= 2
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[factor])
    except cv2.error as exc:
        raise JpegError(f"JPEG does not decode: {str(exc).strip()[-120:]}") from None
    if img is None or img.ndim != 3 or img.shape[2] != 3:
        raise JpegError("JPEG does not decode")
    h, w = img.shape[:2]
    # (EXIF orientation may have turned the image by 90 degrees)
    for full in ((info.width, info.height), (info.height, info.width)):
        if all(abs(got - -(-side // factor)) <= 1 for got, side in zip((w, h), full,
                                                                          strict=True)):
            return img, full
    raise JpegError(f"JPEG decoded to {w}x{h}" + (f" at 1/{factor}" if factor > 1 else "")
                    + f", its header says {info.width}x{info.height}")
