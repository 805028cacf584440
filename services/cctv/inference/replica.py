"""An inference replica's role loop: standby or leader, as the lease decides.

Every replica is identical (``cctv inference --role auto``): the one holding the lease runs the
:class:`~cctv.inference.leader.LeaderLoop`, the others stand by warm, watching the lease (a poll
every ttl/4 plus an immediate wake-up when the leader announces a release). Each beats its
role, epoch, throughput and model into its heartbeat.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

import redis

from cctv.core import keys
from cctv.core.heartbeat import Heartbeat
from cctv.core.redisconn import REDIS_DOWN_ERRORS, Backoff, connect_settings, is_redis_down
from cctv.core.scripts import Scripts
from cctv.inference.capacity import HandoverWatch, name_successor, someone_else_preferred
from cctv.inference.leader import LeaderLoop
from cctv.inference.lease import Acquired, Lease
from cctv.inference.metrics import ACQUISITIONS, EPOCH, IS_LEADER, ReplicaStats
from cctv.inference.settings import InferenceSettings

log = logging.getLogger("cctv.inference")


class Replica:
    """One replica: its role loop, and the state the heartbeat thread and the health
    endpoint read (``role`` is starting, standby or leader)."""

    def __init__(self, settings: InferenceSettings) -> None:
        self.s = settings
        self.replica_id = settings.worker_id or f"{settings.node}-{os.getpid()}"
        self.stop = threading.Event()
        self.role = "starting"
        self.epoch = 0
        self.ready = False
        self.redis_ok_at = 0.0
        self.stats = ReplicaStats()
        self.started = time.time()
        self.redis = connect_settings(settings, name=f"cctv-inference-{self.replica_id}")
        self.scripts = Scripts(self.redis)
        self.heartbeat = Heartbeat(self.redis, "inference", settings.node, settings.heartbeat_s,
                                   fields=self._beat_fields,
                                   on_beat=lambda _pipe: self._beat_done,
                                   instance=self.replica_id)
        self.detector = None
        #: the model's time per frame here, announced for capacity-aware leadership
        self.ms_per_frame = settings.inference_ms_per_frame

    # ---- heartbeat -----------------------------------------------------------------------
    def _beat_fields(self) -> dict[str, object]:
        det = self.detector
        return {"role": self.role, "epoch": self.epoch, "fps": f"{self.stats.fps():.2f}",
                "lag_ms": f"{self.stats.lag_ms:.0f}", "started": f"{self.started:.3f}",
                "model": det.model_name if det else "", "backend": det.backend if det else "",
                "device": det.device if det else "", "ms_per_frame": f"{self.ms_per_frame:.2f}",
                "ms_source": "set" if self.s.inference_ms_per_frame else "measured",
                # --role standby never takes the lease: never hand it over to such a replica
                "may_lead": "1" if self.s.role == "auto" else "0",
                "ready": "1" if self.ready else "0"}

    def _beat_done(self, ok: bool) -> None:
        if ok:
            self.redis_ok_at = time.monotonic()

    # ---- roles ---------------------------------------------------------------------------
    def lead(self, lease: Lease, acquired: Acquired) -> None:
        """Run the leader loop for the leadership ``acquired``, then release the lease (on
        shutdown) or step down (lease lost, write fenced)."""
        self.role, self.epoch = "leader", acquired.epoch
        IS_LEADER.set(1)
        EPOCH.set(acquired.epoch)
        ACQUISITIONS.labels(acquired.reason).inc()
        log.info("became leader: epoch %d, previous %s (%s)", acquired.epoch,
                 acquired.previous or "-", acquired.reason,
                 extra={"epoch": acquired.epoch, "previous": acquired.previous,
                        "reason": acquired.reason})
        with contextlib.suppress(REDIS_DOWN_ERRORS):
            self.redis.xadd(keys.FAILOVERS, {
                "event": "acquired", "epoch": acquired.epoch, "new": self.replica_id,
                "old": acquired.previous, "reason": acquired.reason, "node": self.s.node,
                "time_ms": int(time.time() * 1000)}, maxlen=1000, approximate=True)
        loop = LeaderLoop(self.s, self.redis, self.scripts, self.detector, self.replica_id,
                          self.stats)
        own = {k: str(v) for k, v in self._beat_fields().items()} | {"id": self.replica_id}
        watch = HandoverWatch(self.redis, own, self.s.inference_handover_ratio).start()
        try:
            why = loop.run(acquired.epoch, lambda: lease.held() and not watch.due.is_set(),
                           self.stop)
        finally:
            watch.stop()
            IS_LEADER.set(0)
            self.role = "standby"
        if watch.due.is_set() and not self.stop.is_set() and watch.target:
            # planned hand-over to a much faster standby: name it, then release at once
            try:
                name_successor(self.redis, watch.target, self.s.lease_ttl_ms)
            except REDIS_DOWN_ERRORS as exc:
                log.warning("could not name %s as the next leader: %s", watch.target, exc)
            released = lease.release()
            log.info("handed the lease over to %s (%.1f ms per frame here): %s", watch.target,
                     self.ms_per_frame, "released" if released else "not held",
                     extra={"epoch": acquired.epoch, "to": watch.target})
        elif self.stop.is_set():
            released = lease.release()
            log.info("shutting down: lease %s", "released" if released else "not held",
                     extra={"epoch": acquired.epoch})
        else:
            lease.step_down()
            log.warning("stepped down from epoch %d: %s", acquired.epoch, why,
                        extra={"epoch": acquired.epoch, "why": why})

    def wait_for_lease(self, pubsub: redis.client.PubSub) -> None:
        """Sleep until the lease may be free: a release message or ttl/4."""
        timeout = self.s.lease_ttl_ms / 4000
        msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        if msg:
            log.info("leader announced a release; trying to take over")

    def run(self) -> None:
        """The role loop, until ``stop``: try the lease (``--role auto``), lead while it is
        held, otherwise stand by; Redis unreachable means standby, retried with backoff."""
        lease = Lease(self.redis, self.scripts, self.replica_id, self.s.lease_ttl_ms,
                      replicas=self.s.redis_min_replicas_ack,
                      wait_timeout_ms=self.s.redis_wait_timeout_ms)
        backoff = Backoff(cap_s=2.0)
        pubsub = None
        self.role = "standby"
        while not self.stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(keys.LEASE_RELEASED_CHANNEL)
                # another replica named as the next leader (a hand-over): let it take the lease
                acquired = lease.try_acquire() if self.s.role == "auto" and \
                    not someone_else_preferred(self.redis, self.replica_id) else None
                self.redis_ok_at = time.monotonic()
                backoff.reset()
                if acquired:
                    self.lead(lease, acquired)
                else:
                    self.wait_for_lease(pubsub)
            except (*REDIS_DOWN_ERRORS, redis.ResponseError) as exc:
                if not is_redis_down(exc):
                    raise
                # unreachable, failing over, or an isolated primary refusing writes
                # (min-replicas-to-write): not leader until a primary with replicas answers
                lease.step_down()
                IS_LEADER.set(0)
                self.role = "standby"
                delay = backoff.next_delay()
                log.warning("redis unreachable (%s): not leader; retrying in %.2fs", exc, delay)
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # the connection is broken anyway
                        pubsub.close()
                    pubsub = None
                self.stop.wait(delay)
