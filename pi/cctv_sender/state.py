"""Per-camera state on disk: an exclusive lock and the persistent sequence counter."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path


class StateError(Exception):
    """The state directory cannot be used (permissions, another sender holds it)."""


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename. With ``sync``
    (the default) it is durable when this returns: the file's data is fsynced before the
    rename and the directory after it, so a power cut leaves either the old or the new
    content, never an empty file or the old name pointing nowhere."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(path.parent)


class StateDir:
    """``<root>/<camera>/``, locked for the life of the sender so two senders never share
    a sequence counter or a spool."""

    def __init__(self, root: Path, camera: str) -> None:
        self.path = Path(root) / camera
        self._lock_fh: int | None = None

    def open(self) -> StateDir:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError(f"state directory {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StateError(f"state directory {self.path} is in use by another cctv-sender "
                             f"(pid {other})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fh = fd
        return self

    def close(self) -> None:
        if self._lock_fh is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fh)
            self._lock_fh = None


class SequenceCounter:
    """Frame sequence numbers that never repeat for a camera, across restarts and crashes.

    Numbers are reserved in blocks: the file holds the first number not yet handed out by
    any run, and is rewritten (fsync + rename) once per ``block`` frames, so a crash skips
    at most ``block`` numbers and never reuses one. A camera with no state file starts at
    the current time in microseconds: a reinstalled Pi (state lost) still counts above
    everything it sent before, since no camera sends a million frames a second, and ingest's
    de-duplication does not swallow its new frames.
    """

    def __init__(self, path: Path, block: int = 256) -> None:
        self.path = Path(path)
        self.block = block
        self._next = 0
        self._limit = 0

    def load(self) -> SequenceCounter:
        try:
            raw = self.path.read_text().strip()
            start = int(raw)
            if start < 0:
                raise ValueError(raw)
        except FileNotFoundError:
            start = time.time_ns() // 1000
        except (ValueError, OSError) as exc:
            raise StateError(f"sequence file {self.path} is damaged ({exc}); remove it to "
                             "restart the count from the clock") from None
        self._next = self._limit = start
        return self

    @property
    def peek(self) -> int:
        """The number the next frame will get."""
        return self._next

    def next(self) -> int:
        """Hand out the next sequence number (reserving a new block on disk when needed)."""
        if self._next >= self._limit:
            limit = self._next + self.block
            # durable before any number of the block is used: a power cut never reuses one
            write_atomic(self.path, f"{limit}\n".encode())
            self._limit = limit
        seq = self._next
        self._next += 1
        return seq
