"""Frame accounting from the sender's side: the one definition every test, benchmark and the
swarm drill use.

A sender records, per sequence number, what ingest answered (:class:`Tally`):

* **sent**: every frame it tried to post;
* **acknowledged**: those that got a 2xx (202 accepted, or 200 for a repeat ingest already had);
* **refused**: those that got another status or no answer, with that status (``"429"``,
  ``"ConnectionError"``...).

The system then owes a fate to every acknowledged frame: exactly one result in
``cctv:det:<cam>`` (**processed**) or one record in ``cctv:drops:<cam>`` (**dropped** by an
explicit policy, by reason). An acknowledged frame with neither is **lost**, and lost must be 0.

Only ``redis`` is needed (the drill runs this from a small venv).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


class Tally:
    """What ingest answered to each frame a sender posted (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: set[int] = set()
        self.acknowledged: set[int] = set()
        #: seq -> the status (or error) of its last refusal, for seqs never acknowledged
        self.refused: dict[int, str] = {}
        self.repeats = 0  # 200 answers: ingest already had that seq

    def record(self, seq: int, status: int | None, error: str = "") -> None:
        """Record one answer: an HTTP ``status``, or ``None`` and the ``error`` when none came."""
        with self._lock:
            self.sent.add(seq)
            if status is not None and 200 <= status < 300:
                self.acknowledged.add(seq)
                self.refused.pop(seq, None)
                self.repeats += status == 200
            elif seq not in self.acknowledged:
                self.refused[seq] = str(status) if status is not None else (error or "error")

    def snapshot(self) -> tuple[set[int], set[int], dict[int, str]]:
        """(sent, acknowledged, refused) copies."""
        with self._lock:
            return set(self.sent), set(self.acknowledged), dict(self.refused)


@dataclass
class Accounting:
    """Every frame a sender posted and what became of it."""

    sent: int
    acknowledged: int
    refused_by_status: dict[str, int]
    processed: int
    dropped_by_reason: dict[str, int]
    lost: list[int]  # acknowledged seqs neither processed nor dropped (sorted)
    twice: list[int] = field(default_factory=list)  # seqs with two fates (two results, or both)

    @property
    def refused(self) -> int:
        return sum(self.refused_by_status.values())

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by_reason.values())

    def summary(self) -> dict:
        """A JSON-able dict (for reports)."""
        return {"sent": self.sent, "acknowledged": self.acknowledged, "refused": self.refused,
                "refused_by_status": self.refused_by_status, "processed": self.processed,
                "dropped": self.dropped, "dropped_by_reason": self.dropped_by_reason,
                "lost": len(self.lost), "lost_sample": self.lost[:20],
                "twice": len(self.twice)}

    def __str__(self) -> str:
        return (f"sent {self.sent}, acknowledged {self.acknowledged}, refused {self.refused} "
                f"{self.refused_by_status}; processed {self.processed}, dropped {self.dropped} "
                f"{self.dropped_by_reason}, lost {len(self.lost)} {self.lost[:20]}, "
                f"with two fates {len(self.twice)}")

    def check(self, refused_ok: bool = False) -> None:
        """Fail (AssertionError) when a frame is lost or has two fates, or (unless
        ``refused_ok``) when ingest refused any."""
        assert not self.lost, f"frames lost: {self}"
        assert not self.twice, f"frames with two fates: {self}"
        assert refused_ok or not self.refused, f"frames refused by ingest: {self}"
        assert self.processed + self.dropped == self.acknowledged, str(self)


def account(sent: Iterable[int], acknowledged: Iterable[int], refused: Mapping[int, str],
            result_seqs: Iterable[int], drop_seqs: Mapping[int, str] | Iterable[tuple[int, str]],
            ) -> Accounting:
    """The accounting of one camera from the sender's record and the seqs found in the result
    and drop streams (``drop_seqs``: seq -> reason, or (seq, reason) pairs)."""
    acked = set(acknowledged)
    results = list(result_seqs)
    result_set = set(results)
    pairs = list(drop_seqs.items()) if isinstance(drop_seqs, Mapping) else list(drop_seqs)
    drops: dict[int, str] = {}
    twice = {s for s, n in Counter(results).items() if n > 1}
    for seq, reason in pairs:
        if seq in drops or seq in result_set:
            twice.add(seq)
        drops[seq] = reason
    reasons = Counter(drops[s] for s in acked if s in drops and s not in result_set)
    statuses = Counter(v for s, v in refused.items() if s not in acked)
    return Accounting(
        sent=len(set(sent)), acknowledged=len(acked), refused_by_status=dict(statuses),
        processed=len(acked & result_set), dropped_by_reason=dict(reasons),
        lost=sorted(acked - result_set - set(drops)), twice=sorted(twice & acked))


# ---- from Redis (tests and benchmarks: the streams are not trimmed within a test) ----------
def result_seqs(rdb, camera: str) -> list[int]:
    """The seq of every result of ``camera`` (``cctv:det:<cam>``), repeats included."""
    return [int(f[b"seq"]) for _id, f in rdb.xrange(f"cctv:det:{camera}")]


def drop_seqs(rdb, camera: str) -> list[tuple[int, str]]:
    """(seq, reason) of every recorded drop of ``camera`` (``cctv:drops:<cam>``)."""
    return [(int(s), f.get(b"reason", b"").decode()) for _id, f in
            rdb.xrange(f"cctv:drops:{camera}") for s in f[b"seqs"].decode().split(",")
            if s.strip().lstrip("-").isdigit()]


def account_redis(rdb, camera: str, tally: Tally) -> Accounting:
    """The accounting of ``camera`` from ``tally`` and the streams in ``rdb``."""
    sent, acked, refused = tally.snapshot()
    return account(sent, acked, refused, result_seqs(rdb, camera), drop_seqs(rdb, camera))


def wait_settled(rdb, camera: str, tally: Tally, timeout_s: float = 30.0) -> Accounting:
    """Wait (up to ``timeout_s``) until no acknowledged frame of ``camera`` is still without a
    fate, then return the accounting (which may still show lost frames: call ``check``)."""
    end = time.monotonic() + timeout_s
    while True:
        acc = account_redis(rdb, camera, tally)
        if not acc.lost or time.monotonic() > end:
            return acc
        time.sleep(0.2)
