"""Counters and state shared by the capture and upload threads."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields


@dataclass
class Stats:
    """What happened so far. Every frame the camera delivered is either captured or left
    out, counted by reason: ``superseded`` (a newer frame replaced it before the sender took
    it), ``skipped`` (the fps limit) or ``seq_failed`` (no sequence number could be
    reserved). Every captured frame ends up in exactly one of:
    delivered (including duplicates), dropped (live queue full), evicted (spool full),
    spool_failed (the spool could not be written: disk full, I/O error), rejected (refused
    by ingest), or still pending in the queue or the spool."""

    source_frames: int = 0      # frames the camera delivered to the sender
    superseded: int = 0         # replaced by a newer frame before the sender took them
    captured: int = 0
    first_seq: int = -1
    last_seq: int = -1
    skipped: int = 0            # frames the fps limit left out (never numbered)
    seq_failed: int = 0         # no sequence number could be reserved (disk full)
    unsynced: int = 0           # captured before the wall clock was synchronised
    delivered: int = 0          # 202 + duplicates
    duplicates: int = 0         # 200 duplicate replies
    late: int = 0               # delivered from the spool
    dropped: int = 0            # live queue overflow
    spooled: int = 0            # frames written to the spool
    evicted: int = 0            # spool over its cap
    spool_failed: int = 0       # could not be written to the spool (disk full, I/O error)
    rejected: int = 0           # 4xx other than 429
    retries: int = 0            # failed POSTs that will be retried
    tls_refused: int = 0        # connections refused: ingest's TLS certificate failed the check
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

    def unaccounted(self, pending: int) -> int:
        """Frames the camera delivered that no counter explains (0 when the books balance);
        ``pending``: frames in the live queue and the spool right now that were captured
        by this run."""
        with self._lock:
            left_out = self.superseded + self.skipped + self.seq_failed
            settled = (self.delivered + self.dropped + self.evicted + self.spool_failed
                       + self.rejected)
            return (self.source_frames - left_out - self.captured) + \
                (self.captured - settled - pending)

    def error(self, text: str) -> None:
        """Remember the latest error (shown in the status line)."""
        self.last_error = text

    def snapshot(self) -> dict[str, object]:
        """A JSON-serialisable copy of the counters."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self)
                    if not f.name.startswith("_")}
