"""A small in-memory queue between capture and upload where the newest frame wins."""

from __future__ import annotations

import threading
from collections import deque

from cctv_sender.frame import Frame


class LiveQueue:
    """Bounded FIFO; putting into a full queue drops the oldest frame and counts it."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(1, maxsize)
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, frame: Frame) -> Frame | None:
        """Add ``frame``; returns the frame that was dropped to make room, if any."""
        with self._cond:
            dropped = None
            if len(self._items) >= self.maxsize:
                dropped = self._items.popleft()
                self.dropped += 1
            self._items.append(frame)
            self._cond.notify()
            return dropped

    def get(self, timeout: float) -> Frame | None:
        """The oldest queued frame, waiting up to ``timeout`` seconds; None if none came."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def drain(self) -> list[Frame]:
        """Remove and return everything queued."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            return items

    def wake(self) -> None:
        """Wake a waiting :meth:`get` (on shutdown)."""
        with self._cond:
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._items)
