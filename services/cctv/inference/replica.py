"""An inference replica's role loop: which shards it leads, as their leases decide.

Every replica is identical (``cctv inference --role auto``). For each shard it holds the lease
of, it runs a :class:`~cctv.inference.leader.LeaderLoop` in a thread (one model, shared, one
call at a time); for all the other shards it is a warm standby, watching their leases (a look
every ttl/4 plus an immediate wake-up when a leader announces a release) and taking or handing
over shards as :mod:`cctv.inference.shards` decides. With one shard (the default) this is one
leader and warm standbys. Each replica beats its role, the shards it leads with their epochs,
throughput and model into its heartbeat.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import redis

from cctv.core import keys
from cctv.core.heartbeat import Heartbeat, read_beats
from cctv.core.redisconn import REDIS_DOWN_ERRORS, Backoff, connect_settings, is_redis_down
from cctv.core.scripts import Scripts
from cctv.core.settings import CAMERA_NAME_RE
from cctv.core.shardstate import camera_shards
from cctv.inference.capacity import FRESH_BEAT_S, outclassed
from cctv.inference.leader import LeaderLoop
from cctv.inference.lease import Acquired, Lease
from cctv.inference.metrics import ACQUISITIONS, EPOCH, IS_LEADER, SHARDS_LED, ReplicaStats
from cctv.inference.settings import InferenceSettings
from cctv.inference.shards import MAX_SHARDS, ShardState, View, assign, handovers, takers

log = logging.getLogger("cctv.inference")

#: a shard is handed over (rebalanced) only after it was led here this long: a take-over
#: settles before shards move again
SETTLE_S = 3.0


@dataclass
class Leadership:
    """One shard this replica leads: its lease, the acquisition, and a planned hand-over (set
    ``handover``; ``successor`` None just releases)."""

    keys: keys.ShardKeys
    lease: Lease
    acquired: Acquired
    since: float = field(default_factory=time.monotonic)
    handover: threading.Event = field(default_factory=threading.Event)
    successor: str | None = None
    thread: threading.Thread | None = None


class SerialDetector:
    """The replica's one detector, shared by its shard leaders: one model call at a time."""

    def __init__(self, detector: object, lock: threading.Lock) -> None:
        self._detector, self._lock = detector, lock

    def __getattr__(self, name: str) -> object:
        return getattr(self._detector, name)

    def detect(self, frames: list) -> list:
        """The wrapped detector's ``detect``, holding the lock."""
        with self._lock:
            return self._detector.detect(frames)


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
        #: the number of shards, as every replica uses it (cctv:inference:shards)
        self.shard_count = settings.inference_shards
        #: the shards this replica leads now
        self.leading: dict[int, Leadership] = {}
        self._leading_lock = threading.Lock()
        self._free_since: dict[int, float] = {}
        self._detect_lock = threading.Lock()
        #: set when a leader loop failed unexpectedly (the process then exits non-zero)
        self.failure: BaseException | None = None

    # ---- heartbeat -----------------------------------------------------------------------
    def _beat_fields(self) -> dict[str, object]:
        det = self.detector
        with self._leading_lock:
            led = sorted((k, ld.acquired.epoch) for k, ld in self.leading.items())
        return {"role": self.role, "epoch": self.epoch, "fps": f"{self.stats.fps():.2f}",
                "shards": ",".join(f"{k}:{e}" for k, e in led),
                "shard_count": self.shard_count,
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

    # ---- leading a shard -----------------------------------------------------------------
    def _lead(self, ld: Leadership) -> None:
        """Run the leader loop of one shard, then release its lease (shutdown, hand-over) or
        step down (lease lost, write fenced)."""
        acquired, k = ld.acquired, ld.keys.shard
        try:
            ACQUISITIONS.labels(acquired.reason).inc()
            log.info("became leader of shard %d/%d: epoch %d, previous %s (%s)", k,
                     self.shard_count, acquired.epoch, acquired.previous or "-",
                     acquired.reason, extra={"shard": k, "epoch": acquired.epoch,
                                             "previous": acquired.previous,
                                             "reason": acquired.reason})
            with contextlib.suppress(REDIS_DOWN_ERRORS):
                self.redis.xadd(keys.FAILOVERS, {
                    "event": "acquired", "epoch": acquired.epoch, "shard": k,
                    "new": self.replica_id, "old": acquired.previous,
                    "reason": acquired.reason, "node": self.s.node,
                    "time_ms": int(time.time() * 1000)}, maxlen=1000, approximate=True)
            loop = LeaderLoop(self.s, self.redis, self.scripts, self.detector, self.replica_id,
                              self.stats, shard=ld.keys, shards=self.shard_count)
            why = loop.run(acquired.epoch, lambda: ld.lease.held() and not ld.handover.is_set(),
                           self.stop)
            if ld.handover.is_set() and not self.stop.is_set():
                if ld.successor:
                    # name it first, so no other replica takes the shard in between
                    with contextlib.suppress(REDIS_DOWN_ERRORS):
                        self.redis.set(ld.keys.prefer, ld.successor,
                                       px=3 * self.s.lease_ttl_ms)
                released = ld.lease.release()
                log.info("shard %d handed over to %s: %s", k, ld.successor or "any replica",
                         "released" if released else "not held",
                         extra={"shard": k, "epoch": acquired.epoch, "to": ld.successor})
            elif self.stop.is_set():
                released = ld.lease.release()
                log.info("shutting down: shard %d lease %s", k,
                         "released" if released else "not held",
                         extra={"shard": k, "epoch": acquired.epoch})
            else:
                ld.lease.step_down()
                log.warning("stepped down from shard %d, epoch %d: %s", k, acquired.epoch,
                            why, extra={"shard": k, "epoch": acquired.epoch, "why": why})
        except (*REDIS_DOWN_ERRORS, redis.ResponseError) as exc:
            ld.lease.step_down()
            if not is_redis_down(exc):
                self._fail(k, exc)
            else:
                log.warning("shard %d: redis unreachable (%s); stepped down", k, exc,
                            extra={"shard": k, "epoch": acquired.epoch})
        except Exception as exc:
            ld.lease.step_down()
            self._fail(k, exc)
        finally:
            with self._leading_lock:
                if self.leading.get(k) is ld:
                    del self.leading[k]
                self._roles_changed()

    def _fail(self, k: int, exc: BaseException) -> None:
        """A leader loop failed unexpectedly: stop the replica (its other shards are released
        at once; the orchestrator restarts it) rather than retry the same failure."""
        log.error("shard %d: leader loop failed (%s: %s); stopping this replica", k,
                  type(exc).__name__, exc, exc_info=exc, extra={"shard": k})
        self.failure = exc
        self.stop.set()

    def _roles_changed(self) -> None:
        """Update role, epoch and gauges from :attr:`leading` (under its lock)."""
        self.role = "leader" if self.leading else "standby"
        if self.leading:
            self.epoch = self.leading[min(self.leading)].acquired.epoch
            EPOCH.set(self.epoch)
        IS_LEADER.set(1 if self.leading else 0)
        SHARDS_LED.set(len(self.leading))

    def _start_leading(self, k: int, lease: Lease, acquired: Acquired) -> None:
        ld = Leadership(keys.shard_keys(k), lease, acquired)
        ld.thread = threading.Thread(target=self._lead, args=(ld,), name=f"shard-{k}",
                                     daemon=True)
        with self._leading_lock:
            self.leading[k] = ld
            self._roles_changed()
        ld.thread.start()

    # ---- the view and the decisions ------------------------------------------------------
    def _agree_shard_count(self) -> int:
        """The shard count every replica uses: cctv:inference:shards, written by the first
        replica from its CCTV_INFERENCE_SHARDS. A replica configured otherwise follows it
        (and says so): two counts at once would put a camera in two shards."""
        raw = self.redis.get(keys.INFERENCE_SHARDS)
        if raw is None:
            self.redis.set(keys.INFERENCE_SHARDS, self.s.inference_shards, nx=True)
            raw = self.redis.get(keys.INFERENCE_SHARDS)
        try:
            count = int(raw)
        except (TypeError, ValueError):
            count = 0
        if not 1 <= count <= MAX_SHARDS:
            log.error("%s holds %r, not a shard count from 1 to %d; using %d",
                      keys.INFERENCE_SHARDS, raw, MAX_SHARDS, self.shard_count)
            return self.shard_count
        if count != self.shard_count:
            if count != self.s.inference_shards:
                log.warning("CCTV_INFERENCE_SHARDS=%d here, but the replicas use %d (%s): "
                            "using %d; to change it, stop every replica and delete that key",
                            self.s.inference_shards, count, keys.INFERENCE_SHARDS, count)
            with self._leading_lock:
                for ld in self.leading.values():  # their cameras are another split's
                    ld.handover.set()
        return count

    def _own_beat(self) -> dict[str, str]:
        """This replica's heartbeat fields as the others read them."""
        return {k: str(v) for k, v in self._beat_fields().items()} | {"id": self.replica_id}

    def read_view(self) -> View:
        """The shards (leases, successors, last holders) and the replicas that may lead them,
        from Redis."""
        self.shard_count = self._agree_shard_count()
        pipe = self.redis.pipeline(transaction=False)
        for k in range(self.shard_count):
            sk = keys.shard_keys(k)
            pipe.get(sk.lease)
            pipe.get(sk.prefer)
            pipe.hmget(sk.holder, "worker", "released")
        replies = pipe.execute()
        shards = []
        for k in range(self.shard_count):
            holder, prefer, (last, released) = replies[3 * k:3 * k + 3]
            shards.append(ShardState(k, _text(holder), _text(prefer), _text(last) or "",
                                     released != b"0"))
        now = time.time()
        others = [b for b in read_beats(self.redis, "inference", FRESH_BEAT_S, now)
                  if b.get("id") != self.replica_id]
        if self.shard_count != self.s.inference_shards and not others \
                and all(s.holder is None for s in shards):
            # alone and leading nothing: the configured count may take effect now
            log.info("no other replica: changing the shard count from %d to %d",
                     self.shard_count, self.s.inference_shards)
            pipe = self.redis.pipeline()
            pipe.set(keys.INFERENCE_SHARDS, self.s.inference_shards)
            pipe.delete(keys.INFERENCE_CAMERA_SHARDS)  # the cameras are split anew
            pipe.execute()
        beats = [b for b in others if b.get("ready") == "1" and b.get("may_lead", "1") == "1"]
        holder_of = {s.shard: s.holder for s in shards}
        stale = {b["id"] for b in beats
                 if any(holder_of.get(k) != b["id"] for k in _led_shards(b.get("shards", "")))}
        eligible = [b["id"] for b in beats]
        own = [self._own_beat()] if self.s.role == "auto" and self.ready else []
        eligible += [o["id"] for o in own]
        return View(shards, eligible, outclassed(beats + own, self.s.inference_handover_ratio),
                    stale)

    def assign_cameras(self, view: View) -> None:
        """Give every active camera without a shard its shard (HSETNX: when two replicas race,
        the first write stands and both read it back), spreading cameras over the replicas
        leading the shards in ``view``."""
        if self.shard_count <= 1:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.smembers(keys.CAMERAS_ACTIVE)
        pipe.hgetall(keys.INFERENCE_CAMERA_SHARDS)
        active_raw, current_raw = pipe.execute()
        active = sorted(c.decode(errors="replace") for c in active_raw
                        if CAMERA_NAME_RE.fullmatch(c.decode(errors="replace")))
        current = camera_shards(current_raw, self.shard_count)
        for name in active:
            value = current_raw.get(name.encode())
            if value is not None and name not in current:
                log.warning("camera %s: %s holds shard %r, not one of 0..%d; assigning it "
                            "again", name, keys.INFERENCE_CAMERA_SHARDS,
                            value.decode(errors="replace")[:20], self.shard_count - 1)
                self.redis.hdel(keys.INFERENCE_CAMERA_SHARDS, name)
        leaders = {st.shard: st.holder for st in view.shards}
        for cam, k in assign(active, current, self.shard_count, leaders).items():
            if self.redis.hsetnx(keys.INFERENCE_CAMERA_SHARDS, cam, k):
                log.info("camera %s: in shard %d of %d", cam, k, self.shard_count,
                         extra={"camera": cam, "shard": k})

    def decide(self, view: View) -> None:
        """Take the free shards this replica should take (at once when it is their taker,
        after the grace period otherwise) and hand over the shards it should give away."""
        now = time.monotonic()
        free = {s.shard for s in view.shards if s.holder is None}
        self._free_since = {k: self._free_since.get(k, now) for k in free}
        with self._leading_lock:
            mine = dict(self.leading)
        if self.replica_id not in view.eligible:
            return
        grace_s = self.s.lease_ttl_ms / 2000
        due = takers(view)
        for k in sorted(free):
            if k in mine:
                continue  # still ending here (a hand-over, a lost lease)
            if due.get(k) != self.replica_id and now - self._free_since[k] < grace_s:
                continue
            lease = Lease(self.redis, self.scripts, self.replica_id, self.s.lease_ttl_ms,
                          replicas=self.s.redis_min_replicas_ack,
                          wait_timeout_ms=self.s.redis_wait_timeout_ms,
                          shard=keys.shard_keys(k))
            acquired = lease.try_acquire()
            if acquired:
                self._start_leading(k, lease, acquired)
        if free:
            return  # hand over only in a settled view: every shard led
        for k, successor in handovers(view, self.replica_id).items():
            ld = mine.get(k)
            if ld is None or now - ld.since < SETTLE_S or ld.handover.is_set():
                continue
            log.info("shard %d: handing over to %s (%s)", k, successor,
                     "a much faster replica" if self.replica_id in view.outclassed
                     else "rebalancing", extra={"shard": k, "to": successor})
            ld.successor = successor
            ld.handover.set()

    def wait_for_change(self, pubsub: redis.client.PubSub) -> None:
        """Sleep until a lease may have changed: a release message or ttl/4."""
        timeout = self.s.lease_ttl_ms / 4000
        msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        if msg:
            log.debug("a leader announced a release")

    def _step_down_all(self) -> None:
        with self._leading_lock:
            for ld in self.leading.values():
                ld.lease.step_down()

    def run(self) -> None:
        """The role loop, until ``stop``: read the view, take and hand over shards, lead the
        held ones in their threads; Redis unreachable means leading nothing, retried with
        backoff. On stop, every shard led is released."""
        if self.detector is not None and not isinstance(self.detector, SerialDetector):
            self.detector = SerialDetector(self.detector, self._detect_lock)
        backoff = Backoff(cap_s=2.0)
        pubsub = None
        self.role = "standby"
        while not self.stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(keys.LEASE_RELEASED_CHANNEL)
                view = self.read_view()
                self.assign_cameras(view)
                self.redis_ok_at = time.monotonic()
                backoff.reset()
                self.decide(view)
                self.wait_for_change(pubsub)
            except (*REDIS_DOWN_ERRORS, redis.ResponseError) as exc:
                if not is_redis_down(exc):
                    raise
                # unreachable, failing over, or an isolated primary refusing writes
                # (min-replicas-to-write): not leader until a primary with replicas answers
                self._step_down_all()
                delay = backoff.next_delay()
                log.warning("redis unreachable (%s): leading nothing; retrying in %.2fs", exc,
                            delay)
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # the connection is broken anyway
                        pubsub.close()
                    pubsub = None
                self.stop.wait(delay)
        with self._leading_lock:
            threads = [ld.thread for ld in self.leading.values() if ld.thread]
        for t in threads:
            t.join(timeout=10)


def _text(raw: bytes | None) -> str | None:
    return raw.decode(errors="replace") if raw is not None else None


def _led_shards(field_value: str) -> list[int]:
    """The shard numbers of a heartbeat's ``shards`` field (``"0:12,3:7"``)."""
    out = []
    for part in field_value.split(","):
        k = part.partition(":")[0]
        if k.isdigit():
            out.append(int(k))
    return out
