"""The unit of work: one JPEG frame with its capture time and sequence number."""

from __future__ import annotations

import time
from dataclasses import dataclass


def now_us() -> int:
    """Wall-clock time in microseconds since the Unix epoch."""
    return time.time_ns() // 1000


@dataclass(slots=True)
class Frame:
    """One captured frame. ``seq`` is assigned by the sender when the frame is accepted;
    ``clock_synced`` is False for frames captured before the wall clock was synchronised
    (their ``ts_us`` may be far off)."""

    jpeg: bytes
    ts_us: int
    seq: int = -1
    late: bool = False
    clock_synced: bool = True
