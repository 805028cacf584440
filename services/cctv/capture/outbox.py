"""The frames of one camera waiting for ingest: a small bounded queue in memory.

The puller's grabber puts frames in, its poster takes the oldest out and removes it only once
ingest answered (accepted or duplicate), so a frame that could not be posted is sent again
(safe: ingest de-duplicates on (camera, seq)). When the queue is full the oldest frame is
dropped, and :meth:`Outbox.put` returns it so that the drop is counted and logged.
"""

from __future__ import annotations

from cctv_sender.frame import Frame
from cctv_sender.livequeue import LiveQueue


class Outbox(LiveQueue):
    """At most ``size`` frames, oldest first: the sender's live queue (``put`` drops and
    returns the oldest when full, ``drain``), read by peeking instead of taking."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._closed = False

    @property
    def size(self) -> int:
        """How many frames it holds at most."""
        return self.maxsize

    def peek(self, timeout_s: float) -> Frame | None:
        """The oldest frame (left in the queue), waiting up to ``timeout_s`` for one."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout_s)
            return self._items[0] if self._items else None

    def done(self, frame: Frame) -> None:
        """``frame`` was answered: remove it (when it is still the oldest)."""
        with self._cond:
            if self._items and self._items[0] is frame:
                self._items.popleft()

    def close(self) -> None:
        """Wake a waiting :meth:`peek` for good."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
