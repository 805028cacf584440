"""A bounded on-disk spool for frames that could not be delivered while ingest was down.

One file per frame, ``<seq>_<capture ts µs>.jpg``, written through a temporary name and a
rename so a crash never leaves a half frame under a real name. The total size is capped;
adding over the cap evicts the oldest frames (counted). The spool survives restarts:
frames left by a previous run are found again at start and uploaded like the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections import deque
from pathlib import Path

from cctv_sender.frame import Frame

log = logging.getLogger("cctv_sender.spool")

_NAME_RE = re.compile(r"^(\d{1,20})_(\d{1,20})\.jpg$")


def _looks_whole(path: str, size: int) -> bool:
    """A JPEG start marker at the front and an end marker near the end (a power cut can leave
    a file empty, zero-filled or cut short)."""
    if size < 4:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(max(0, size - 64))
            tail = fh.read(64)
    except OSError:
        return False
    return head == b"\xff\xd8" and b"\xff\xd9" in tail


class SpoolWriteError(OSError):
    """A frame could not be written (disk full, I/O error); ``evicted`` frames were removed
    before the attempt."""

    def __init__(self, cause: OSError, evicted: int) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.evicted = evicted


class Spool:
    """Frames on disk, oldest first, at most ``cap_bytes`` in total (0 disables it)."""

    def __init__(self, path: Path, cap_bytes: int) -> None:
        self.path = Path(path)
        self.cap_bytes = cap_bytes
        self._index: deque[tuple[int, int, int]] = deque()  # (seq, ts_us, size), by seq
        self._bytes = 0
        self._lock = threading.Lock()
        self.evicted = 0
        self.written = 0
        self.write_failed = 0
        self._inflight = -1  # the seq peek() handed out and not yet removed

    @property
    def enabled(self) -> bool:
        return self.cap_bytes > 0

    def open(self) -> Spool:
        """Create the folder and index what a previous run left (dropping damaged files)."""
        if not self.enabled:
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        found: list[tuple[int, int, int]] = []
        for entry in os.scandir(self.path):
            m = _NAME_RE.match(entry.name)
            if not m:
                if entry.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                continue
            size = entry.stat().st_size
            if not _looks_whole(entry.path, size):
                log.warning("dropping damaged spool file %s", entry.name)
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                continue
            found.append((int(m.group(1)), int(m.group(2)), size))
        found.sort()
        self._index = deque(found)
        self._bytes = sum(size for _s, _t, size in found)
        if found:
            log.info("spool holds %d frames (%.1f MB) from before; they will be sent late",
                     len(found), self._bytes / 1e6)
        self._evict_to(self.cap_bytes)
        return self

    def _file(self, seq: int, ts_us: int) -> Path:
        return self.path / f"{seq:020d}_{ts_us}.jpg"

    def _evict_to(self, limit: int) -> int:
        evicted = 0
        kept: list[tuple[int, int, int]] = []
        while self._index and self._bytes > limit:
            seq, ts, size = self._index.popleft()
            if seq == self._inflight:  # being sent now: its outcome is counted instead
                kept.append((seq, ts, size))
                if not self._index:
                    break
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._file(seq, ts))
            self._bytes -= size
            evicted += 1
        self._index.extendleft(kept)
        self.evicted += evicted
        return evicted

    def add(self, frame: Frame) -> int:
        """Store ``frame``; returns how many frames were evicted to make room (the frame
        itself counts as evicted when it alone is over the cap or the spool is off).
        Raises :class:`SpoolWriteError` when the frame cannot be written."""
        size = len(frame.jpeg)
        if not self.enabled or size > self.cap_bytes:
            self.evicted += 1
            return 1
        with self._lock:
            evicted = self._evict_to(self.cap_bytes - size)
            final = self._file(frame.seq, frame.ts_us)
            tmp = final.with_suffix(".tmp")
            try:
                with open(tmp, "wb") as fh:
                    fh.write(frame.jpeg)
                os.replace(tmp, final)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                self.write_failed += 1
                raise SpoolWriteError(exc, evicted) from exc
            # keep the index ordered by seq (frames normally arrive in order)
            if self._index and self._index[-1][0] > frame.seq:
                items = sorted([*self._index, (frame.seq, frame.ts_us, size)])
                self._index = deque(items)
            else:
                self._index.append((frame.seq, frame.ts_us, size))
            self._bytes += size
            self.written += 1
            return evicted

    def peek(self) -> Frame | None:
        """The oldest spooled frame (marked late), or None when the spool is empty."""
        with self._lock:
            while self._index:
                seq, ts, size = self._index[0]
                try:
                    data = self._file(seq, ts).read_bytes()
                except FileNotFoundError:
                    self._index.popleft()
                    self._bytes -= size
                    continue
                self._inflight = seq
                return Frame(jpeg=data, ts_us=ts, seq=seq, late=True)
            return None

    def remove(self, seq: int) -> None:
        """Forget frame ``seq`` (delivered or rejected)."""
        with self._lock:
            if seq == self._inflight:
                self._inflight = -1
            for i, (s, ts, size) in enumerate(self._index):
                if s == seq:
                    del self._index[i]
                    self._bytes -= size
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._file(s, ts))
                    return

    def __len__(self) -> int:
        return len(self._index)

    @property
    def bytes(self) -> int:
        """Total size of the spooled frames."""
        return self._bytes
