"""A capture instance's lease on one camera, and the seq floor that fences it.

* acquire (``CAPTURE_ACQUIRE``, one script): ``SET lease <instance> NX PX ttl``, ``INCR epoch``,
  ``SET floor epoch * 10**10``; the holder's seqs for the camera start at the floor, so they are
  never reused across take-overs, and ingest refuses (``fenced``) every frame of a deposed
  holder, whose seqs are all below the new floor;
* renew (compare-and-extend, ``LEASE_RENEW``) every third of the TTL, all held cameras in one
  round trip (:func:`renew_all`);
* release (compare-and-delete) when the camera is handed over on purpose (SIGTERM, a removed
  camera, rebalancing), so another instance takes it at its next scan instead of after the TTL;
* any doubt (renewal refused, Redis unreachable, renewal overdue) means "not held": the puller
  stops at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import redis

from cctv.core import keys
from cctv.core.redisconn import REDIS_DOWN_ERRORS, NotReplicated, durable
from cctv.core.scripts import Scripts

log = logging.getLogger("cctv.capture.lease")

#: a lease counts as held only while its last renewal is younger than this share of the TTL:
#: the puller stops before another instance can take the camera over
HELD_SHARE = 0.8


class CameraLease:
    """One instance's lease on one camera (after :meth:`try_acquire` succeeded)."""

    def __init__(self, client: redis.Redis, scripts: Scripts, camera: str, instance: str,
                 ttl_ms: int, *, replicas: int = 0, wait_timeout_ms: int = 200) -> None:
        self.redis, self.scripts, self.camera, self.instance = client, scripts, camera, instance
        self.ttl_ms, self.replicas, self.wait_timeout_ms = ttl_ms, replicas, wait_timeout_ms
        self.epoch = 0
        #: the first seq of this holder (every seq it posts is at least this)
        self.floor = 0
        self.lost_reason = ""
        self._lost = threading.Event()
        self._last_ok = 0.0

    def try_acquire(self) -> bool:
        """Take the lease when no instance holds it and the camera is still registered; False
        otherwise. With replicas to
        wait for, raises NotReplicated (a ConnectionError) when the new floor did not reach
        them in time (the caller does not pull; the lease it set expires)."""
        # a removal this instance's copy of the registry has not seen yet: not claimed (one
        # removed later is dropped at the next scan)
        if not self.redis.hexists(keys.CAMERAS_REGISTRY, self.camera):
            return False
        sent = time.monotonic()
        try:
            res, = durable(self.redis, self.replicas, self.wait_timeout_ms, lambda pipe:
                           self.scripts.capture_acquire(
                               keys=[keys.capture_lease(self.camera),
                                     keys.capture_epoch(self.camera),
                                     keys.capture_floor(self.camera)],
                               args=[self.instance, self.ttl_ms], client=pipe))
        except NotReplicated as exc:
            if exc.replies and not exc.replies[0]:
                return False
            raise
        if not res:
            return False
        self.epoch, self.floor = int(res[0]), int(res[1])
        self._last_ok = sent
        self._lost.clear()
        self.lost_reason = ""
        return True

    def held(self) -> bool:
        """True while the lease is ours for sure (renewed in time, never refused)."""
        if self._lost.is_set():
            return False
        return time.monotonic() - self._last_ok < self.ttl_ms / 1000 * HELD_SHARE

    def renewed(self, ok: bool, sent: float) -> None:
        """Record the answer of a renewal sent at ``sent`` (monotonic)."""
        if ok:
            if not self._lost.is_set():
                self._last_ok = max(self._last_ok, sent)
        else:
            self.lose("renewal refused: another instance holds the camera")

    def lose(self, reason: str) -> None:
        """Mark the lease lost (the puller stops at its next frame)."""
        if not self._lost.is_set():
            self.lost_reason = reason
            self._lost.set()

    def release(self) -> bool:
        """Give the lease up (compare-and-delete): another instance takes the camera at its
        next scan. False when it was not ours any more or Redis did not answer."""
        self.lose("released")
        try:
            return bool(self.scripts.capture_release(keys=[keys.capture_lease(self.camera)],
                                                     args=[self.instance]))
        except REDIS_DOWN_ERRORS as exc:
            log.warning("camera %s: lease release failed (it expires in %d ms): %s",
                        self.camera, self.ttl_ms, exc)
            return False


def renew_all(client: redis.Redis, scripts: Scripts, leases: Iterable[CameraLease]) -> None:
    """Renew every lease of ``leases`` that is still held, in one round trip. Redis being
    unreachable leaves them as they are (they stop counting as held when overdue)."""
    todo = [lease for lease in leases if lease.held()]
    if not todo:
        return
    sent = time.monotonic()
    pipe = client.pipeline(transaction=False)
    for lease in todo:
        scripts.lease_renew(keys=[keys.capture_lease(lease.camera)],
                            args=[lease.instance, lease.ttl_ms], client=pipe)
    try:
        replies = pipe.execute()
    except REDIS_DOWN_ERRORS as exc:
        log.warning("capture lease renewal failed, redis unreachable: %s", exc)
        return
    for lease, ok in zip(todo, replies, strict=True):
        lease.renewed(bool(ok), sent)


def lease_holders(client: redis.Redis, cameras: Iterable[str]) -> dict[str, str | None]:
    """camera -> the instance holding its capture lease (None: free), in one round trip."""
    names = list(cameras)
    if not names:
        return {}
    values = client.mget([keys.capture_lease(c) for c in names])
    return {c: v.decode() if isinstance(v, bytes) else v for c, v in zip(names, values,
                                                                          strict=True)}
