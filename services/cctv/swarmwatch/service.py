"""`cctv swarmwatch`: nodes, services and tasks from the Docker Engine API into Redis.

Runs on a swarm manager, the only container with the Docker socket mounted (the socket is
root-equivalent even read-only, so nothing that faces users has it: docs/security.md). Every
``CCTV_SWARMWATCH_INTERVAL_S`` it reads ``GET /nodes``, ``/services`` and ``/tasks`` and writes
one JSON snapshot (core/swarmsnap.py) to ``cctv:swarm:snapshot`` with a TTL of a few periods,
so a stopped swarmwatch makes the dashboard fall back to heartbeats within seconds. It opens no
port: its health check is ``cctv swarmwatch --check`` (the snapshot in Redis is fresh).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import redis

from cctv.core import keys
from cctv.core.entries import EntryError
from cctv.core.heartbeat import Heartbeat
from cctv.core.redisconn import REDIS_DOWN_ERRORS, connect
from cctv.core.swarmsnap import decode_snapshot, encode_snapshot
from cctv.swarmwatch.docker_api import DockerAPI, DockerUnavailable
from cctv.swarmwatch.settings import SwarmwatchSettings

log = logging.getLogger("cctv.swarmwatch")

#: the snapshot outlives this many missed periods, then the key expires
TTL_PERIODS = 5


def snapshot_ttl_s(settings: SwarmwatchSettings) -> int:
    """The TTL of the published snapshot, in whole seconds."""
    return max(2, int(round(TTL_PERIODS * settings.swarmwatch_interval_s)))


class SwarmWatch:
    """Reads the Docker API and publishes snapshots; see the module doc."""

    def __init__(self, settings: SwarmwatchSettings) -> None:
        self.s = settings
        self.api = DockerAPI(settings.swarmwatch_socket)
        self.redis = connect(settings.redis_url, name="cctv-swarmwatch")
        self.stop = threading.Event()
        self.published = 0
        self._last_reason = ""

    def read(self) -> bytes:
        """One snapshot value: the swarm, or ``ok: false`` with a one-word reason."""
        now = time.time()
        try:
            swarm = self.api.swarm()
        except DockerUnavailable as exc:
            if exc.reason != self._last_reason:
                log.warning("docker API unavailable (%s): %s", exc.reason, exc)
            self._last_reason = exc.reason
            return encode_snapshot(time=now, node=self.s.node, ok=False, error=exc.reason)
        except Exception:  # noqa: BLE001 - an API reply of an unexpected shape
            log.exception("docker API reply not understood")
            self._last_reason = "docker_error"
            return encode_snapshot(time=now, node=self.s.node, ok=False, error="docker_error")
        if self._last_reason:
            log.info("docker API answers again")
        self._last_reason = ""
        return encode_snapshot(time=now, node=self.s.node, ok=True, **swarm)

    def publish_once(self) -> None:
        """Read and publish one snapshot (raises Redis errors)."""
        self.redis.set(keys.SWARM_SNAPSHOT, self.read(), ex=snapshot_ttl_s(self.s))
        self.published += 1

    def run(self) -> int:
        """Publish until ``stop`` is set; Redis outages are waited out."""
        log.info("publishing the swarm from %s every %.1f s", self.s.swarmwatch_socket,
                 self.s.swarmwatch_interval_s)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.publish_once()
            except REDIS_DOWN_ERRORS as exc:
                log.warning("redis unreachable (%s); retrying", exc)
            except redis.RedisError as exc:
                log.error("publishing the snapshot failed: %s", exc)
            self.stop.wait(max(0.05, self.s.swarmwatch_interval_s
                               - (time.monotonic() - started)))
        return 0


def run_swarmwatch(settings: SwarmwatchSettings) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    watch = SwarmWatch(settings)

    def on_signal(_signum: int, _frame: object) -> None:
        watch.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    Heartbeat(watch.redis, "swarmwatch", settings.node, settings.heartbeat_s,
              fields=lambda: {"published": watch.published}).start()
    return watch.run()


def check(settings: SwarmwatchSettings) -> int:
    """The container health check: 0 when a valid snapshot younger than its TTL is in Redis."""
    client = connect(settings.redis_url, name="cctv-swarmwatch-check")
    try:
        snap = decode_snapshot(client.get(keys.SWARM_SNAPSHOT))
    except (redis.RedisError, OSError) as exc:
        print(f"unhealthy: redis: {exc}")
        return 1
    except EntryError as exc:
        print(f"unhealthy: snapshot: {exc}")
        return 1
    age = time.time() - snap.time
    if age > snapshot_ttl_s(settings):
        print(f"unhealthy: the snapshot is {age:.0f} s old")
        return 1
    return 0
