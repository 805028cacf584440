"""Read and decode the next frames while the model runs on the current ones.

Without this, the leader's loop is read → decode → detect → publish in one thread: a frame that
arrives while the model is busy waits in the stream until the model is done (up to one model
call of extra latency), and the CPU sits idle for the model during every read and decode.

The :class:`Prefetcher` thread keeps one slot per camera holding the newest frame picked up,
already decoded and, when the detector can (``prepare``), letterboxed into the model's input.
A newer frame for the same camera replaces the held one, which is acked as dropped
(``behind``) through the same fenced script as every other drop, so the live policy and the
accounting are unchanged: every frame read is processed or counted. A frame that does not decode
or letterbox is acked as ``corrupt`` (by ``decode``) and the thread goes on. Frames still held
when leadership ends stay pending in the consumer group, where the next leader claims them.

The prefetcher knows nothing of the leader: it is given plain callables (read, decode, drop,
held), so it imports only the frame record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from cctv.inference.records import Frame

log = logging.getLogger("cctv.inference.prefetch")


class Prefetcher:
    """Background reader; :meth:`take` hands over decoded frames.

    ``read`` returns new frames per camera (oldest first), ``decode`` decodes one in place
    (False: it was dropped as corrupt), ``drop`` acks frames as dropped for a reason, ``held``
    says whether the lease is still held.
    """

    def __init__(self, read: Callable[[], dict[str, list[Frame]]],
                 decode: Callable[[Frame], bool], drop: Callable[[list[Frame], str], int],
                 held: Callable[[], bool]) -> None:
        self.read, self.decode, self.drop, self.held = read, decode, drop, held
        self._slots: dict[str, Frame] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)

    def start(self) -> Prefetcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading; held frames stay pending in the group for whoever leads next."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(5)

    def take(self, timeout_s: float = 0.1) -> list[Frame]:
        """The held frames (newest per camera, decoded), waiting up to ``timeout_s`` for one.

        Re-raises in the caller's thread what stopped the reader (e.g. ``NotLeader``).
        """
        with self._cond:
            if not self._slots and self._error is None:
                self._cond.wait(timeout_s)
            if self._error is not None:
                raise self._error
            frames, self._slots = list(self._slots.values()), {}
        return frames

    def _run(self) -> None:
        try:
            # held(): a replica that lost the lease must not read (and so hold pending) any more
            while not self._stop.is_set() and self.held():
                batch = self.read()
                for frames in batch.values():
                    if frames:
                        self._hold(frames)
        except BaseException as exc:  # handed to the leader's thread by take()
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def _hold(self, frames: list[Frame]) -> None:
        newest = frames[-1]
        behind = frames[:-1]
        if not self.decode(newest):
            # dropped as corrupt (counted, logged): the next newest takes its place, and the
            # frame held already stays held
            if behind:
                self._hold(behind)
            return
        with self._cond:
            replaced = self._slots.get(newest.camera)
            self._slots[newest.camera] = newest
            self._cond.notify_all()
        if replaced is not None:
            behind.insert(0, replaced)
        self.drop(behind, "behind")
