"""The records the leader passes between reading, detecting and publishing (no tuples)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cctv.core.entries import FrameEntry

if TYPE_CHECKING:
    import numpy as np

    from cctv.inference.detector import Detection


@dataclass
class Frame:
    """One frame entry read from a camera stream (validated by core.entries.decode_frame)."""

    camera: str
    entry: FrameEntry
    pick_us: int
    #: decoded BGR image, filled in by the prefetch thread
    image: np.ndarray | None = None
    #: the image as the detector's input (detector.prepare), filled in by the prefetch thread
    prepared: object | None = None
    #: the frame's full (width, height): ``image`` may be decoded smaller (detections are
    #: scaled back to this size)
    size: tuple[int, int] | None = None

    @property
    def full_size(self) -> tuple[int, int]:
        """(width, height) of the frame as sent (of ``image`` when no size is known)."""
        if self.size is not None:
            return self.size
        return (self.image.shape[1], self.image.shape[0]) if self.image is not None else (0, 0)

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def seq(self) -> str:
        return str(self.entry.seq)

    @property
    def jpeg(self) -> bytes:
        return self.entry.jpeg

    @property
    def id_ms(self) -> int:
        return self.entry.id_ms

    @property
    def ts_us(self) -> int:
        """Capture time (sender clock, µs)."""
        return self.entry.ts


@dataclass(frozen=True)
class BadEntry:
    """A stream entry that does not decode as a frame: dropped as corrupt by id."""

    camera: str
    id: str
    seq: str
    why: str


@dataclass(frozen=True)
class Result:
    """One processed frame, ready to publish: its detections (with track ids when tracking)
    and when and how fast it was done."""

    frame: Frame
    detections: list[Detection]
    infer_ms: float
    done_us: int
    width: int
    height: int


@dataclass(frozen=True)
class TrackState:
    """A camera's tracker state due to be saved (cctv.inference.trackstate bytes)."""

    camera: str
    blob: bytes
    ttl_ms: int
