"""Caps on long-lived connections (MJPEG viewers, server-sent event streams).

Each open stream holds one of web's gunicorn threads for as long as it lasts. Without a cap,
enough viewers (or one script opening streams in a loop) take every thread, and pages, the API
and /healthz stop answering. A stream over its cap is refused at once with 503 and
``Retry-After``, counted in ``cctv_web_streams_refused_total``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from flask import Response
from prometheus_client import Counter

from cctv.web.api import error_response

REFUSED = Counter("cctv_web_streams_refused_total", "Streams refused at their cap",
                  ["kind", "cap"])
#: seconds a refused client is asked to wait before it tries again
RETRY_AFTER_S = 5


class Slots:
    """A total cap and an optional per-key cap (per camera) on open streams."""

    def __init__(self, kind: str, total: int, per_key: int | None = None) -> None:
        self.kind, self.total, self.per_key = kind, total, per_key
        self._open: dict[str, int] = {}
        self._count = 0
        self._lock = threading.Lock()

    @property
    def open(self) -> int:
        """Streams open now."""
        return self._count

    def acquire(self, key: str = "") -> str | None:
        """Take a slot for ``key``; returns None, or the name of the cap that is full."""
        with self._lock:
            if self._count >= self.total:
                cap = "total"
            elif self.per_key is not None and self._open.get(key, 0) >= self.per_key:
                cap = "per_camera"
            else:
                self._count += 1
                self._open[key] = self._open.get(key, 0) + 1
                return None
        REFUSED.labels(self.kind, cap).inc()
        return cap

    def release(self, key: str = "") -> None:
        """Give back a slot taken by :meth:`acquire`."""
        with self._lock:
            self._count -= 1
            left = self._open.get(key, 0) - 1
            if left > 0:
                self._open[key] = left
            else:
                self._open.pop(key, None)

    def refusal(self, cap: str) -> Response:
        """The 503 reply for a stream over ``cap``."""
        what = "per camera" if cap == "per_camera" else "in total"
        resp = error_response(503, "too_many_streams",
                              f"too many open {self.kind} streams {what}; retry later")
        resp.headers["Retry-After"] = str(RETRY_AFTER_S)
        return resp

    def held(self, items: Iterator, key: str = "") -> Iterator:
        """Yield from ``items``; the slot of ``key`` is released when the stream ends or the
        client goes away (the generator is closed)."""
        try:
            yield from items
        finally:
            close = getattr(items, "close", None)
            if close:
                close()
            self.release(key)
