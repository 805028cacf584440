"""The leader loop: the live policy, while this replica holds the lease.

Per camera, only the newest frame is processed; older ones are acked as ``dropped_behind``,
frames older than CCTV_MAX_FRAME_AGE_S (Redis time) as ``dropped_stale``, undecodable ones as
``dropped_corrupt``. A full read (a backlog) is skipped in one server-side step, counted with
seqs. At take-over, and every CCTV_PENDING_CLAIM_IDLE_S/2, pending frames are claimed and the
same policy applied to them. The parts: :class:`~cctv.inference.reader.StreamReader` reads,
:class:`~cctv.inference.prefetch.Prefetcher` reads ahead and decodes while the model runs,
:class:`~cctv.inference.processor.FrameProcessor` detects and tracks, and every write goes
through the fenced :class:`~cctv.inference.publisher.Publisher`, so the loop is the same
whether or not a standby exists: the lease only decides when it runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from cctv.core import keys
from cctv.core.registry import RegistryCache
from cctv.core.scripts import Scripts
from cctv.inference.clock import RedisClock
from cctv.inference.detector import Detector
from cctv.inference.metrics import ReplicaStats
from cctv.inference.prefetch import Prefetcher
from cctv.inference.processor import FrameProcessor
from cctv.inference.publisher import NotLeader, Publisher
from cctv.inference.reader import StreamReader
from cctv.inference.records import Frame
from cctv.inference.settings import InferenceSettings
from cctv.inference.tracking import Tracking

log = logging.getLogger("cctv.inference.leader")


class LeaderLoop:
    """Runs while this replica holds the lease of a shard (of ``shards``; shard 0 of one
    unless given) on that shard's cameras; all writes are fenced by the shard's epoch."""

    def __init__(self, settings: InferenceSettings, client: redis.Redis, scripts: Scripts,
                 detector: Detector, replica_id: str, stats: ReplicaStats | None = None, *,
                 shard: keys.ShardKeys | None = None, shards: int = 1) -> None:
        self.s = settings
        self.shard = shard or keys.shard_keys(0)
        self.clock = RedisClock(client)
        self.publisher = Publisher(client, scripts, replica_id, detector.model_name,
                                   settings.det_maxlen, self.shard)
        self.reader = StreamReader(client, replica_id, settings.max_frame_bytes,
                                   self.publisher.drop_corrupt, self.shard.shard, shards)
        # per-camera trackers of this leadership, restored from Redis on first use
        self.tracking = Tracking(settings, client)
        self.processor = FrameProcessor(settings, detector, self.tracking, self.publisher,
                                        self.clock, stats or ReplicaStats(),
                                        RegistryCache(client))
        self._next_reclaim = 0.0

    @property
    def epoch(self) -> int:
        return self.publisher.epoch

    # ---- the live policy -----------------------------------------------------------------
    def read(self) -> dict[str, list[Frame]]:
        """New frames per camera, after skipping the backlog the last read found."""
        if self.reader.cameras():
            for cam in self.reader.take_backlogged():
                self.publisher.skip_backlog(cam)
        return self.reader.read()

    def drop_stale(self, frames: list[Frame]) -> list[Frame]:
        """Drop (and count) frames older than CCTV_MAX_FRAME_AGE_S; return the others."""
        now_ms = self.clock.now_ms()
        max_age_ms = self.s.max_frame_age_s * 1000
        stale = [f for f in frames if now_ms - f.id_ms > max_age_ms]
        for f in stale:
            self.publisher.drop([f], "stale")
        return [f for f in frames if now_ms - f.id_ms <= max_age_ms]

    def claim_pending(self, min_idle_ms: int) -> None:
        """Claim frames pending longer than ``min_idle_ms`` (0 at take-over: with the lease,
        every pending frame belongs to a dead or deposed leader); process the newest fresh one
        per camera, drop the rest (stale, or behind the newest) with their seqs."""
        now_ms = self.clock.now_ms()
        for cam in self.reader.cameras():
            claimed = self.reader.claim(cam, min_idle_ms)
            if not claimed:
                continue
            max_age_ms = self.s.max_frame_age_s * 1000
            fresh = [f for f in claimed if now_ms - f.id_ms <= max_age_ms]
            stale = [f for f in claimed if now_ms - f.id_ms > max_age_ms]
            log.info("camera %s: claimed %d pending frames (%d fresh, %d stale)%s", cam,
                     len(claimed), len(fresh), len(stale),
                     "" if min_idle_ms == 0 else f" idle over {min_idle_ms} ms",
                     extra={"camera": cam, "epoch": self.epoch})
            self.publisher.drop(stale, "stale")
            if fresh:
                self.publisher.drop(fresh[:-1], "behind")
                self.processor.process([fresh[-1]])

    def take_over_pending(self) -> None:
        """Claim frames a previous leader read but never finished; process fresh, drop stale."""
        self.claim_pending(0)

    def maybe_reclaim(self) -> None:
        """Every ``CCTV_PENDING_CLAIM_IDLE_S``/2: claim frames pending longer than that (read by
        a replica after it lost the lease: the read is not fenced, the ack is)."""
        if time.monotonic() < self._next_reclaim:
            return
        self._next_reclaim = time.monotonic() + self.s.pending_claim_idle_s / 2
        self.claim_pending(int(self.s.pending_claim_idle_s * 1000))

    # ---- the loop ------------------------------------------------------------------------
    def run(self, epoch: int, held: Callable[[], bool], stop: threading.Event) -> str:
        """Lead until the lease is lost or ``stop`` is set; returns why it ended."""
        self.publisher.epoch = epoch
        self.reader.refresh_cameras()
        self._next_reclaim = time.monotonic() + self.s.pending_claim_idle_s / 2
        try:
            self.take_over_pending()
            prefetch = Prefetcher(self.read, self.processor.decode, self.publisher.drop,
                                  held).start()
            try:
                while not stop.is_set():
                    if not held():
                        return "lease lost"
                    chosen = self.drop_stale(prefetch.take())
                    if held():
                        self.maybe_reclaim()
                    if not chosen:
                        continue
                    if not held():
                        return "lease lost"
                    self.processor.process(chosen)
            finally:
                prefetch.stop()
        except NotLeader as exc:
            log.warning("write refused by fencing, stepping down: %s", exc,
                        extra={"epoch": epoch})
            return "fenced"
        return "stopped"
