"""The inference leadership lease and its fencing epoch.

Protocol (docs/architecture.md, "Failover"):

* acquire: ``SET lease <id> NX PX ttl`` and ``INCR epoch`` in one script; the epoch is the
  fencing token written on (and checked by) every result;
* renew every ttl/3 from a background thread with compare-and-extend, so a long model call
  never lets the lease lapse while the process is healthy;
* release with compare-and-delete on shutdown and announce it on a channel, so a standby
  takes over at once instead of waiting for the TTL;
* any doubt (renewal refused, Redis unreachable, renewal overdue) means "not leader";
* with replicas to wait for (``CCTV_REDIS_MIN_REPLICAS_ACK``), an acquisition counts only once
  its epoch reached them (``WAIT``): a replica promoted by a failover then has an epoch at least
  as high as any leader ever published with, so epochs never go backwards.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import redis

from cctv.core import keys
from cctv.core.redisconn import REDIS_DOWN_ERRORS, NotReplicated, durable
from cctv.core.scripts import Scripts

log = logging.getLogger("cctv.inference.lease")


@dataclass(frozen=True)
class Acquired:
    """A successful acquisition: the epoch and who held the lease before."""

    epoch: int
    previous: str
    reason: str  # initial | expired | released


class Lease:
    """One replica's view of the lease of one inference shard (shard 0 unless given)."""

    def __init__(self, client: redis.Redis, scripts: Scripts, replica_id: str, ttl_ms: int, *,
                 replicas: int = 0, wait_timeout_ms: int = 200,
                 shard: keys.ShardKeys | None = None) -> None:
        self.redis, self.scripts, self.replica_id, self.ttl_ms = client, scripts, replica_id, ttl_ms
        self.keys = shard or keys.shard_keys(0)
        self.replicas, self.wait_timeout_ms = replicas, wait_timeout_ms
        self.epoch = 0
        self._lost = threading.Event()
        self._stop_renew = threading.Event()
        self._renewer: threading.Thread | None = None
        self._last_ok = 0.0  # monotonic time of the last successful acquire/renew

    def try_acquire(self) -> Acquired | None:
        """Take the lease if it is free; start renewing it. None when someone else holds it.

        With replicas to wait for, raises :class:`cctv.core.redisconn.NotReplicated` (a
        ``ConnectionError``) when the new epoch did not reach them in time: the caller treats it
        as Redis trouble and does not lead (the lease it set expires after the TTL)."""
        sent = time.monotonic()
        try:
            res, = durable(self.redis, self.replicas, self.wait_timeout_ms, lambda pipe:
                           self.scripts.lease_acquire(
                               keys=[self.keys.lease, self.keys.epoch, self.keys.holder],
                               args=[self.replica_id, self.ttl_ms], client=pipe))
        except NotReplicated as exc:
            if exc.replies and not exc.replies[0]:
                return None  # not acquired: nothing to make durable
            log.warning("lease acquired but its epoch did not reach a replica in time; not "
                        "leading (%s)", exc)
            raise
        if not res:
            return None
        self.epoch = int(res[0])
        self._last_ok = sent
        self._lost.clear()
        self._stop_renew.clear()
        self._renewer = threading.Thread(target=self._renew_loop, daemon=True,
                                         name=f"lease-renew-{self.keys.shard}")
        self._renewer.start()
        return Acquired(self.epoch, res[1].decode(), res[2].decode())

    def held(self) -> bool:
        """True while we hold the lease for sure (renewed within the TTL, never refused)."""
        if self._lost.is_set():
            return False
        # Stop well before the TTL runs out: a standby may take over the moment it expires.
        return time.monotonic() - self._last_ok < self.ttl_ms / 1000 * 0.8

    def _renew_loop(self) -> None:
        interval = self.ttl_ms / 3000
        while not self._stop_renew.wait(interval):
            sent = time.monotonic()
            try:
                ok = self.scripts.lease_renew(keys=[self.keys.lease],
                                              args=[self.replica_id, self.ttl_ms])
            except REDIS_DOWN_ERRORS as exc:
                log.warning("lease renewal failed, redis unreachable: %s", exc)
                if not self.held():
                    self._lost.set()
                    return
                continue
            if ok:
                self._last_ok = sent
            else:
                log.warning("lease lost: renewal refused (another replica holds it)",
                            extra={"epoch": self.epoch})
                self._lost.set()
                return

    def release(self) -> bool:
        """Give the lease up (compare-and-delete) so a standby takes over at once."""
        self._stop_renew.set()
        self._lost.set()
        try:
            return bool(self.scripts.lease_release(
                keys=[self.keys.lease, self.keys.holder, keys.LEASE_RELEASED_CHANNEL],
                args=[self.replica_id]))
        except REDIS_DOWN_ERRORS as exc:
            log.warning("lease release failed (it will expire): %s", exc)
            return False

    def step_down(self) -> None:
        """Stop renewing without releasing (the lease was lost already)."""
        self._stop_renew.set()
        self._lost.set()

