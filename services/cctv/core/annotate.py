"""Draw detections (boxes and labels) on a frame."""

from __future__ import annotations

import cv2
import numpy as np

from cctv.core.jpeg import FrameLimits, JpegError
from cctv.core.jpeg_decode import decode_jpeg

_PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
            (10, 249, 72), (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0),
            (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100), (236, 24, 0),
            (255, 56, 132), (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255)]


def color_for(cls: int) -> tuple[int, int, int]:
    """A stable BGR colour per class id."""
    return _PALETTE[cls % len(_PALETTE)]


def draw_detections(img: np.ndarray, dets: list[dict]) -> np.ndarray:
    """Draw each detection's box and ``name conf`` label on ``img`` (in place) and return it."""
    h, w = img.shape[:2]
    thick = max(1, round((h + w) / 600))
    scale = max(0.4, thick / 3)
    for d in dets:
        x1, y1, x2, y2 = (int(v) for v in d["xyxy"])
        color = color_for(int(d.get("cls", 0)))
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
        label = f"{d.get('name', d.get('cls'))} {float(d.get('conf', 0)):.2f}"
        if d.get("track") is not None:
            label = f"#{d['track']} " + label
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2
        cv2.rectangle(img, (x1, ty - th - base), (x1 + tw + 2, ty + base - 1), color, -1)
        cv2.putText(img, label, (x1 + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return img


def annotate_jpeg(jpeg: bytes, dets: list[dict], quality: int,
                  limits: FrameLimits | None = None) -> bytes | None:
    """``jpeg`` decoded, with ``dets`` drawn, encoded again at ``quality``; None when the
    bytes do not decode (or must not: :func:`cctv.core.jpeg_decode.decode_jpeg`) or the encode
    fails."""
    try:
        return annotate_or_raise(jpeg, dets, quality, limits)
    except JpegError:
        return None


def annotate_or_raise(jpeg: bytes, dets: list[dict], quality: int,
                      limits: FrameLimits | None = None) -> bytes:
    """Like :func:`annotate_jpeg`, raising :class:`JpegError` with the reason instead."""
    img = decode_jpeg(jpeg, limits)
    try:
        draw_detections(img, dets)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    except (cv2.error, KeyError, TypeError, ValueError, OverflowError) as exc:
        raise JpegError(f"drawing failed: {type(exc).__name__}: {exc}") from None
    if not ok:
        raise JpegError("JPEG encode failed")
    return buf.tobytes()


def draw_banner(img: np.ndarray, text: str) -> np.ndarray:
    """A dark band with ``text`` across the top of ``img`` (in place), e.g. "detection paused"."""
    h, w = img.shape[:2]
    thick = max(1, round((h + w) / 800))
    scale = max(0.5, (h + w) / 1800)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    band = th + base + 12
    img[:band] = (img[:band] * 0.35).astype(img.dtype)
    cv2.putText(img, text, (max(4, (w - tw) // 2), th + 6), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (80, 200, 255), thick, cv2.LINE_AA)
    return img


def banner_jpeg(jpeg: bytes, text: str, quality: int, limits: FrameLimits | None = None) -> bytes:
    """``jpeg`` with :func:`draw_banner` (``text`` empty: the frame as it is, re-encoded).
    Raises :class:`JpegError` when it does not decode or encode."""
    img = decode_jpeg(jpeg, limits)
    try:
        if text:
            draw_banner(img, text)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    except (cv2.error, ValueError, OverflowError) as exc:
        raise JpegError(f"drawing failed: {type(exc).__name__}: {exc}") from None
    if not ok:
        raise JpegError("JPEG encode failed")
    return buf.tobytes()
