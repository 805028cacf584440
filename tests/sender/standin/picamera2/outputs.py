"""Stand-in for picamera2.outputs.Output (same constructor and methods)."""

from __future__ import annotations

from typing import Any


class Output:
    def __init__(self, pts: Any = None) -> None:
        self.recording = False
        self.ptsoutput = pts

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def outputframe(self, frame: bytes, keyframe: bool = True, timestamp: Any = None,
                    packet: Any = None, audio: bool = False) -> None:
        pass
