"""The frames of one camera waiting for ingest: a small bounded queue in memory.

The puller's grabber puts frames in, its poster takes the oldest out and removes it only once
ingest answered (accepted or duplicate), so a frame that could not be posted is sent again
(safe: ingest de-duplicates on (camera, seq)). When the queue is full the oldest frame is
dropped, and :meth:`Outbox.put` returns it so that the drop is counted and logged.
"""

from __future__ import annotations

import threading
from collections import deque

from cctv_sender.frame import Frame


class Outbox:
    """At most ``size`` frames, oldest first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._q: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, frame: Frame) -> Frame | None:
        """Add ``frame``; returns the oldest frame dropped to make room, or None."""
        with self._cond:
            dropped = self._q.popleft() if len(self._q) >= self.size else None
            self._q.append(frame)
            self._cond.notify_all()
            return dropped

    def peek(self, timeout_s: float) -> Frame | None:
        """The oldest frame (left in the queue), waiting up to ``timeout_s`` for one."""
        with self._cond:
            if not self._q and not self._closed:
                self._cond.wait(timeout_s)
            return self._q[0] if self._q else None

    def done(self, frame: Frame) -> None:
        """``frame`` was answered: remove it (when it is still the oldest)."""
        with self._cond:
            if self._q and self._q[0] is frame:
                self._q.popleft()

    def drain(self) -> list[Frame]:
        """Remove and return every frame (the camera is handed over: they will not be sent)."""
        with self._cond:
            out = list(self._q)
            self._q.clear()
            return out

    def close(self) -> None:
        """Wake a waiting :meth:`peek` for good."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._q)
