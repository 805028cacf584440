"""``cctv capture``: one capture instance (the stack runs one per node): every
``CCTV_CAPTURE_SCAN_S`` it reads the camera registry and the other instances' heartbeats,
claims free cameras up to its fair share (:mod:`cctv.capture.assignment`) under a per-camera
lease (:mod:`cctv.capture.lease`), runs one :class:`~cctv.capture.puller.Puller` per camera it
holds, and stops the pullers of cameras removed from the registry or lost to another
instance. A renewal thread renews every held lease each third of the TTL. SIGTERM releases
every lease, so the other instances take the cameras over at their next scan.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from http.server import ThreadingHTTPServer

import redis

from cctv.capture import assignment, metrics
from cctv.capture.lease import CameraLease, lease_holders, renew_all
from cctv.capture.puller import Puller
from cctv.capture.settings import CaptureSettings
from cctv.core import keys
from cctv.core.health_server import start_health_server
from cctv.core.heartbeat import Heartbeat
from cctv.core.logthrottle import LogThrottle
from cctv.core.redisconn import REDIS_DOWN_ERRORS, NotReplicated, connect_settings
from cctv.core.registry import Camera, RegistryCache, redact_url
from cctv.core.scripts import Scripts
from cctv.core.signals import stop_on_signals

log = logging.getLogger("cctv.capture")

SERVICE = "capture"
#: an instance above its fair share this long hands one camera back (then waits as long again)
REBALANCE_AFTER_S = 5.0
#: a camera ingest refused (403/404) is not claimed again by this instance for this long,
#: unless the registry changes meanwhile
REFUSED_PAUSE_S = 30.0


class CaptureService:
    """The scan loop of one capture instance."""

    def __init__(self, settings: CaptureSettings) -> None:
        self.s = settings
        self.instance = f"{settings.node}-{os.getpid()}"
        self.redis = connect_settings(settings, name=f"cctv-capture-{self.instance}")
        self.scripts = Scripts(self.redis)
        self.registry = RegistryCache(self.redis, max_age_s=min(0.5, settings.capture_scan_s * 2))
        ttl_s = settings.capture_lease_ttl_ms / 1000
        # beat often enough that a dead instance stops counting within about one lease TTL
        self.beat_s = min(settings.heartbeat_s, ttl_s / 3)
        self.heartbeat = Heartbeat(self.redis, SERVICE, settings.node, self.beat_s,
                                   fields=self._beat_fields, instance=self.instance)
        self.pullers: dict[str, Puller] = {}
        self.stop = threading.Event()
        self.redis_ok_at = 0.0
        self.running = False
        self.live = 1
        self._free_since: dict[str, float] = {}
        # camera -> (when, registry version) ingest refused it
        self._refused: dict[str, tuple[float, int]] = {}
        self._over_since: float | None = None
        self._warn = LogThrottle(log)
        self._lock = threading.Lock()

    def _rank(self, camera: str) -> int:
        """The order this instance tries free cameras in: its own, so instances starting
        together do not all race for the same camera first."""
        return zlib.crc32(f"{self.instance}:{camera}".encode())

    # ---- what the others see ------------------------------------------------------------
    def _beat_fields(self) -> dict[str, object]:
        with self._lock:
            names = sorted(self.pullers)
        return {"cameras": ",".join(names), "count": len(names)}

    def live_instances(self) -> int:
        """Capture instances whose heartbeat is fresh (this one included)."""
        window = 2.5 * self.beat_s
        members = self.redis.zrangebyscore(keys.HEARTBEATS, time.time() - window, "+inf")
        prefix = keys.heartbeat(SERVICE, "")
        mine = keys.heartbeat(SERVICE, self.instance)
        names = {m.decode() if isinstance(m, bytes) else m for m in members}
        return len({n for n in names if n.startswith(prefix)} | {mine})

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> None:
        """Scan until stopped; then release every lease."""
        renewer = threading.Thread(target=self._renew_loop, daemon=True, name="capture-renew")
        renewer.start()
        self.heartbeat.start()
        # let the other instances' heartbeats be seen before the first claim, so a fleet
        # starting together spreads the cameras at once
        self.stop.wait(2 * self.beat_s)
        self.running = True
        while not self.stop.is_set():
            try:
                self.scan()
                self.redis_ok_at = time.monotonic()
            except REDIS_DOWN_ERRORS as exc:
                self._warn.warning("redis", "redis unreachable (%s): pulling the cameras held "
                                   "while their leases last", exc)
            except redis.RedisError as exc:
                self._warn.warning("redis-error", "scan failed: %s", exc)
            self.stop.wait(self.s.capture_scan_s)
        self.running = False
        self.release_all("stopping")

    def _renew_loop(self) -> None:
        interval = self.s.capture_lease_ttl_ms / 3000
        while not self.stop.wait(interval):
            with self._lock:
                leases = [p.lease for p in self.pullers.values() if p.running]
            try:
                renew_all(self.redis, self.scripts, leases)
            except redis.RedisError as exc:
                self._warn.warning("renew", "lease renewal failed: %s", exc)

    def scan(self) -> None:
        """One round: drop what must stop, claim up to the fair share, hand back a surplus."""
        snap = self.registry.snapshot()
        if not snap.loaded:
            return
        cameras = snap.cameras
        now = time.monotonic()
        # pullers that stopped by themselves (lease lost, fenced, refused) are forgotten
        for name, p in list(self.pullers.items()):
            if not p.running:
                self._forget(name, release=p.stop_reason not in ("fenced", "lease_lost"))
                if p.stop_reason == "rejected":
                    self._refused[name] = (now, snap.version)
            elif name in cameras:
                p.update(cameras[name])
        self._refused = {n: (t, v) for n, (t, v) in self._refused.items()
                         if now - t < REFUSED_PAUSE_S and v == snap.version}
        pullable = [n for n, c in cameras.items() if assignment.may_pull(c, self.s.node)]
        holders = lease_holders(self.redis, [n for n in pullable if n not in self.pullers])
        holders.update(dict.fromkeys(set(self._refused) & set(holders), "refused by ingest"))
        self._free_since = {n: self._free_since.get(n, now) for n, h in holders.items()
                            if h is None}
        self.live = self.live_instances()
        plan = assignment.plan(cameras, self.s.node, self.pullers, holders, self.live,
                               max_cameras=self.s.capture_max_cameras,
                               free_since=self._free_since, now=now,
                               orphan_s=2 * self.s.capture_lease_ttl_ms / 1000,
                               rank=self._rank)
        for name in plan.drop:
            why = "removed" if name not in cameras else "no longer pullable on this node"
            self._stop_puller(name, "removed" if name not in cameras else "reassigned", why)
        for name in plan.claim:
            self._claim(cameras[name])
        self._rebalance(plan.share, now)
        metrics.HELD.set(len(self.pullers))

    def _claim(self, camera: Camera) -> None:
        lease = CameraLease(self.redis, self.scripts, camera.name, self.instance,
                            self.s.capture_lease_ttl_ms, replicas=self.s.redis_min_replicas_ack,
                            wait_timeout_ms=self.s.redis_wait_timeout_ms)
        try:
            if not lease.try_acquire():
                return
        except NotReplicated as exc:
            log.warning("camera %s: lease taken but not replicated in time (%s); not pulling",
                        camera.name, exc)
            return
        metrics.LEASES.labels(camera.name).inc()
        self._free_since.pop(camera.name, None)
        log.info("camera %s: pulling %s (epoch %d, seqs from %d; %d live capture instances)",
                 camera.name, redact_url(camera.source), lease.epoch, lease.floor, self.live)
        puller = Puller(camera, lease, self.s, self.s.capture_token)
        with self._lock:
            self.pullers[camera.name] = puller
        puller.start()

    def _rebalance(self, share: int, now: float) -> None:
        if assignment.surplus(len(self.pullers), share) == 0:
            self._over_since = None
            return
        if self._over_since is None:
            self._over_since = now
            return
        if now - self._over_since < REBALANCE_AFTER_S:
            return
        self._over_since = now
        # hand back the camera taken last (the others keep their longest-running pullers)
        name = max(self.pullers, key=lambda n: self.pullers[n].lease.epoch)
        self._stop_puller(name, "released", f"{len(self.pullers)} cameras held, fair share "
                          f"{share}: handed over to another instance")

    def _stop_puller(self, name: str, reason: str, why: str) -> None:
        p = self.pullers.get(name)
        if p is None:
            return
        log.info("camera %s: %s", name, why)
        p.stop(reason)
        self._forget(name, release=True)

    def _forget(self, name: str, release: bool) -> None:
        with self._lock:
            p = self.pullers.pop(name, None)
        if p is not None and release:
            p.lease.release()

    def release_all(self, why: str) -> None:
        """Stop every puller and release its lease (a planned hand-over)."""
        for name in list(self.pullers):
            self._stop_puller(name, "released", f"{why}: lease released")
        metrics.HELD.set(0)


def run_capture(settings: CaptureSettings) -> int:
    """Run one capture instance until SIGTERM/SIGINT; returns the process exit code."""
    if not settings.capture_token:
        log.error("CCTV_CAPTURE_TOKEN is not set (CCTV_CAPTURE_TOKEN_FILE for a Docker "
                  "secret): ingest accepts capture frames only with it")
        return 2
    svc = CaptureService(settings)

    stop_on_signals(svc.stop, log, "releasing every camera")
    try:
        server = _health_server(svc)
    except OSError as exc:
        log.error("cannot listen on CCTV_CAPTURE_HTTP_BIND=%s: %s", settings.capture_http_bind,
                  exc)
        return 2
    log.info("capture instance %s on node %s: ingest %s, lease TTL %d ms", svc.instance,
             settings.node, ", ".join(settings.capture_ingest_urls),
             settings.capture_lease_ttl_ms)
    svc.run()
    svc.heartbeat.stop()
    server.shutdown()
    log.info("capture instance %s stopped", svc.instance)
    return 0


def _health_server(svc: CaptureService) -> ThreadingHTTPServer:
    def ready() -> tuple[bool, dict]:
        redis_ok = time.monotonic() - svc.redis_ok_at < 5
        ok = svc.running and redis_ok
        return ok, {"ready": ok, "redis": redis_ok, "cameras": len(svc.pullers)}

    return start_health_server(svc.s.capture_http_bind, ready, svc.s.metrics_token)
