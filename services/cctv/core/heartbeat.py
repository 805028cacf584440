"""Heartbeats of every service (ingest, web, inference, events): who runs where, since when,
how busy.

Each process writes ``cctv:hb:<service>:<instance>`` (a hash with a TTL of three periods; the
instance is ``<node>-<pid>`` unless the service names itself, as inference replicas do) every
``CCTV_HEARTBEAT_S`` from a daemon thread, and indexes it in ``cctv:heartbeats``, so the cluster
dashboard can list nodes and instances without the Docker API or a keyspace scan.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable

import redis

from cctv import __version__
from cctv.core import keys
from cctv.core.redisconn import REDIS_DOWN_ERRORS

log = logging.getLogger("cctv.heartbeat")


class Heartbeat:
    """A daemon thread that beats for one service instance.

    ``fields()`` returns the service's own fields for each beat (rates, counts); ``on_beat``
    (optional) is called with a pipeline before it executes, to piggyback other writes (ingest
    flushes its reply counters this way) and must tolerate the pipeline failing.
    """

    def __init__(self, client: redis.Redis, service: str, node: str, interval_s: float,
                 fields: Callable[[], dict[str, object]] | None = None,
                 on_beat: Callable[[redis.client.Pipeline], Callable[[bool], None]] | None
                 = None, instance: str | None = None) -> None:
        self.redis, self.service, self.node, self.interval_s = client, service, node, interval_s
        self.instance = instance or f"{node}-{os.getpid()}"
        self.key = keys.heartbeat(service, self.instance)
        self.started = time.time()
        self._fields = fields or (lambda: {})
        self._on_beat = on_beat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        """Start beating (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"heartbeat-{self.service}")
            self._thread.start()
            atexit.register(self.stop)  # a clean exit leaves the dashboard at once
        return self

    def beat(self) -> None:
        """Write one heartbeat (and whatever ``on_beat`` adds) in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        mapping: dict[str, object] = {
            "id": self.instance, "service": self.service, "node": self.node,
            "pid": os.getpid(), "version": __version__, "started": f"{self.started:.3f}",
            "beat": f"{time.time():.3f}", "interval_s": self.interval_s}
        mapping.update(self._fields())
        pipe.hset(self.key, mapping={k: str(v) for k, v in mapping.items()})
        pipe.pexpire(self.key, int(self.interval_s * 3000))
        pipe.zadd(keys.HEARTBEATS, {self.key: time.time()})
        done = self._on_beat(pipe) if self._on_beat else None
        try:
            pipe.execute()
        except REDIS_DOWN_ERRORS:
            if done:
                done(False)
            raise
        if done:
            done(True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except REDIS_DOWN_ERRORS as exc:
                log.debug("heartbeat failed: %s", exc)
            except redis.RedisError as exc:  # never let the thread die on a Redis error reply
                log.warning("heartbeat failed: %s", exc)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        """Stop beating and remove the heartbeat (best effort)."""
        self._stop.set()
        with contextlib.suppress(redis.RedisError, OSError):
            self.redis.delete(self.key)


def read_beats(client: redis.Redis, service: str, window_s: float,
               now: float | None = None) -> list[dict]:
    """The heartbeats of ``service``'s instances that beat within ``window_s`` (found through
    the heartbeat index), decoded, each with its ``id`` and ``age_s``, sorted by id."""
    now = time.time() if now is None else now
    prefix = keys.heartbeat(service, "")
    hb_keys = [k for k in client.zrangebyscore(keys.HEARTBEATS, now - window_s, "+inf")
               if k.decode(errors="replace").startswith(prefix)]
    return beats_of(client, hb_keys, now)


def beats_of(client: redis.Redis, hb_keys: list[bytes], now: float) -> list[dict]:
    """The heartbeat hashes ``hb_keys`` (one round trip), decoded (strings), each with its
    ``id`` and ``age_s`` (seconds since its beat; None without a valid one); expired ones left
    out; sorted by id."""
    pipe = client.pipeline(transaction=False)
    for k in hb_keys:
        pipe.hgetall(k)
    out = []
    for k, fields in zip(hb_keys, pipe.execute(), strict=True):
        if not fields:
            continue  # expired between the index and the read
        beat = {a.decode(): v.decode(errors="replace") for a, v in fields.items()}
        beat.setdefault("id", keys.heartbeat_parts(k.decode())[1])
        try:
            beat["age_s"] = round(now - float(beat.get("beat", 0)), 2)
        except ValueError:
            beat["age_s"] = None
        out.append(beat)
    return sorted(out, key=lambda b: b.get("id", ""))
