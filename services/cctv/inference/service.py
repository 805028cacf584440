"""An inference replica: load the model (warm), then lead or stand by, as the lease decides.

``cctv inference --role auto`` is the only mode users need: every replica is identical; the one
holding the lease runs :class:`LeaderLoop`, the others wait warm, watching the lease (a poll
every ttl/4 plus an immediate wake-up when the leader announces a release).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from http.server import ThreadingHTTPServer

import redis
from prometheus_client import Counter, Gauge

from cctv.core import keys
from cctv.core.health_server import start_health_server
from cctv.core.heartbeat import Heartbeat
from cctv.core.redisconn import (
    REDIS_DOWN_ERRORS,
    Backoff,
    connect_settings,
    is_redis_down,
)
from cctv.core.scripts import Scripts
from cctv.core.settings import Settings
from cctv.inference.detector import ModelLoadError, load_detector
from cctv.inference.lease import Lease
from cctv.inference.tracking import TrackingUnavailable, warm_tracker
from cctv.inference.worker import LeaderLoop, WorkerStats

log = logging.getLogger("cctv.inference")

IS_LEADER = Gauge("cctv_inference_is_leader", "1 while this replica holds the lease")
EPOCH = Gauge("cctv_inference_leader_epoch", "Epoch of this replica's current/last leadership")
ACQUISITIONS = Counter("cctv_inference_failovers_total",
                       "Lease acquisitions by this replica, by reason: initial (first leader), "
                       "expired (took over from a dead leader), released (planned hand-over)",
                       ["reason"])
for _reason in ("initial", "expired", "released"):
    ACQUISITIONS.labels(_reason)  # export zeros, so rate() sees the first failover


class Replica:
    """State shared by the role loop, the heartbeat thread and the health endpoint."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.worker_id = settings.worker_id or f"{settings.node}-{os.getpid()}"
        self.stop = threading.Event()
        self.role = "starting"
        self.epoch = 0
        self.ready = False
        self.redis_ok_at = 0.0
        self.stats = WorkerStats()
        self.started = time.time()
        self.redis = connect_settings(settings, name=f"cctv-inference-{self.worker_id}")
        self.scripts = Scripts(self.redis)
        self.heartbeat = Heartbeat(self.redis, "inference", settings.node, settings.heartbeat_s,
                                   fields=self._beat_fields,
                                   on_beat=lambda _pipe: self._beat_done,
                                   instance=self.worker_id)
        self.detector = None

    # ---- heartbeat -----------------------------------------------------------------------
    def _beat_fields(self) -> dict[str, object]:
        det = self.detector
        return {"role": self.role, "epoch": self.epoch, "fps": f"{self.stats.fps():.2f}",
                "lag_ms": f"{self.stats.lag_ms:.0f}", "started": f"{self.started:.3f}",
                "model": det.model_name if det else "", "backend": det.backend if det else "",
                "device": det.device if det else ""}

    def _beat_done(self, ok: bool) -> None:
        if ok:
            self.redis_ok_at = time.monotonic()

    # ---- roles ---------------------------------------------------------------------------
    def lead(self, lease: Lease, acquired) -> None:
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
                "event": "acquired", "epoch": acquired.epoch, "new": self.worker_id,
                "old": acquired.previous, "reason": acquired.reason, "node": self.s.node,
                "time_ms": int(time.time() * 1000)}, maxlen=1000, approximate=True)
        loop = LeaderLoop(self.s, self.redis, self.scripts, self.detector, self.worker_id,
                          self.stats)
        try:
            why = loop.run(acquired.epoch, lease.held, self.stop)
        finally:
            IS_LEADER.set(0)
            self.role = "standby"
        if self.stop.is_set():
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
        lease = Lease(self.redis, self.scripts, self.worker_id, self.s.lease_ttl_ms,
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
                acquired = lease.try_acquire() if self.s.role == "auto" else None
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


def _health_server(replica: Replica) -> ThreadingHTTPServer:
    def ready() -> tuple[bool, dict]:
        redis_ok = time.monotonic() - replica.redis_ok_at < 5
        ok = replica.ready and redis_ok
        return ok, {"ready": ok, "model_loaded": replica.ready, "redis": redis_ok,
                    "role": replica.role}

    return start_health_server(replica.s.inference_http_bind, ready, replica.s.metrics_token)


def run_inference(settings: Settings) -> int:
    """Run one replica until SIGTERM/SIGINT; returns the process exit code."""
    replica = Replica(settings)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: finishing the current frame, then releasing the lease",
                 signal.Signals(signum).name)
        replica.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server = _health_server(replica)
    except OSError as exc:
        log.error("cannot listen on CCTV_INFERENCE_HTTP_BIND=%s: %s",
                  settings.inference_http_bind, exc)
        return 2
    replica.heartbeat.start()
    try:
        replica.detector = load_detector(settings.model, device=settings.device,
                                         imgsz=settings.imgsz, conf=settings.conf,
                                         iou=settings.iou, classes=settings.classes)
        warm_tracker(settings)  # load the tracker now, not at the first take-over
    except (ModelLoadError, TrackingUnavailable) as exc:
        log.error("%s", exc)
        replica.stop.set()
        replica.heartbeat.stop()
        server.shutdown()
        return 2
    replica.ready = True
    log.info("replica %s ready (warm) on node %s", replica.worker_id, settings.node,
             extra={"worker": replica.worker_id})
    replica.run()
    replica.heartbeat.stop()
    server.shutdown()
    log.info("replica %s stopped", replica.worker_id)
    return 0
