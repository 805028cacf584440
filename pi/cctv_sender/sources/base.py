"""The source interface: every camera kind yields JPEG frames the same way."""

from __future__ import annotations

from abc import ABC, abstractmethod


class SourceError(Exception):
    """The camera failed to open or stopped delivering; the sender reconnects with backoff."""


class SourceEnded(Exception):
    """A finite source (a file without loop) has no more frames."""


class Source(ABC):
    """A camera. Call :meth:`open`, then :meth:`grab` and, for frames you keep,
    :meth:`retrieve`; :meth:`close` at the end. Skipping ``retrieve`` for a frame saves the
    JPEG encode, which is how the fps limit stays cheap.

    ``grab`` blocks until the next frame is there (sources that pace themselves, such as
    files, sleep here) and raises :class:`SourceError` when the camera is lost.
    """

    #: how the source is shown in logs and status (never with credentials)
    name: str = "source"
    #: frames per second the source delivers, when known (0: unknown)
    nominal_fps: float = 0.0
    #: frames the camera handed over but that were replaced by a newer one before ``grab``
    #: took them (sources with their own delivery thread; counted as dropped by the sender)
    superseded: int = 0

    @abstractmethod
    def open(self) -> None:
        """Connect to the camera; raise :class:`SourceError` when it cannot be opened."""

    @abstractmethod
    def grab(self) -> None:
        """Wait for the next frame and make it current."""

    @abstractmethod
    def retrieve(self) -> bytes:
        """The current frame as JPEG bytes."""

    def capture_ts_us(self) -> int | None:
        """When the current frame was captured (µs since the Unix epoch), if the camera says
        so; None lets the sender take the time ``grab`` returned."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release the camera; safe to call more than once."""

    def describe(self) -> str:
        """A short description of what was opened (resolution, fps, encoder)."""
        return self.name

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
