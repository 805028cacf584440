"""Counters and state shared by the capture and upload threads."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields


@dataclass
class Stats:
    """What happened so far. Every captured frame ends up in exactly one of: delivered
    (including duplicates), dropped (live queue full), evicted (spool full), rejected
    (refused by ingest), or still pending in the queue or the spool."""

    captured: int = 0
    first_seq: int = -1
    last_seq: int = -1
    skipped: int = 0            # frames the fps limit left out (never numbered)
    delivered: int = 0          # 202 + duplicates
    duplicates: int = 0         # 200 duplicate replies
    late: int = 0               # delivered from the spool
    dropped: int = 0            # live queue overflow
    spooled: int = 0            # frames written to the spool
    evicted: int = 0            # spool over its cap
    rejected: int = 0           # 4xx other than 429
    retries: int = 0            # failed POSTs that will be retried
    reconnects: int = 0         # camera reopen attempts after a failure
    source_state: str = "starting"
    ingest_state: str = "unknown"
    last_error: str = ""
    started: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        """Add to counters atomically: ``stats.add(delivered=1, late=1)``."""
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def error(self, text: str) -> None:
        """Remember the latest error (shown in the status line)."""
        self.last_error = text

    def snapshot(self) -> dict[str, object]:
        """A JSON-serialisable copy of the counters."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self)
                    if not f.name.startswith("_")}
