"""The cluster health snapshot behind /cluster and /api/v1/cluster.

One :class:`ClusterMonitor` per web process builds the snapshot at most once a second (while
somebody looks: a page, an API client or an event stream) and shares it with every reader:
the inference leader and standbys (lease, epoch, heartbeats), the failover history with the
measured gaps, nodes/services/tasks (the snapshot `cctv swarmwatch` publishes from the Docker
API when there is a fresh one, else heartbeats), per-camera
figures, Redis memory and clients, ingest rates and replies by status, and the alerts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import redis
from prometheus_client import Counter

from cctv.core import keys
from cctv.core.entries import EntryError
from cctv.core.logthrottle import LogThrottle
from cctv.core.redis_topology import (
    SentinelWatch,
    primary_address,
    record_primary,
    redis_history,
    replication,
)
from cctv.core.redisconn import REDIS_DOWN_ERRORS, RedisTarget
from cctv.core.scripts import Scripts
from cctv.core.shardstate import ShardLease, read_shards, warm_standbys
from cctv.core.swarmsnap import SwarmSnapshot, decode_snapshot
from cctv.web.camera_stats import CameraStats

log = logging.getLogger("cctv.web.cluster")
_warn = LogThrottle(log)

BAD_SWARM = Counter("cctv_web_bad_swarm_snapshots_total",
                    "Swarm snapshots read from Redis that failed validation (ignored)")

#: the monitor keeps refreshing this long after the last reader
IDLE_AFTER_S = 30.0
FAILOVER_HISTORY = 20


def _s(v: object) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _num(v: object, kind: type = float) -> float | int | None:
    try:
        return kind(_s(v))
    except (TypeError, ValueError):
        return None


def _hb(fields: dict, now: float) -> dict:
    out = {_s(k): _s(v) for k, v in fields.items()}
    beat = _num(out.get("beat"))
    out["age_s"] = round(max(0.0, now - beat), 2) if beat else None
    started = _num(out.get("started"))
    out["uptime_s"] = round(max(0.0, now - started), 1) if started else None
    for name in ("fps", "lag_ms", "requests_per_s", "accepted_per_s", "errors_per_s",
                 "ms_per_frame"):
        if name in out:
            out[name] = _num(out[name])
    for name in ("pid", "epoch", "viewers", "sse_clients", "requests_total"):
        if name in out:
            out[name] = _num(out[name], int)
    return out


def failover_history(entries: list[tuple[bytes, dict]], limit: int = FAILOVER_HISTORY
                     ) -> list[dict]:
    """Pair each ``acquired`` event with the ``first_result`` of its epoch (the measured
    gap), newest first."""
    acquired: dict[tuple[int, int], dict] = {}
    gaps: dict[tuple[int, int], int] = {}
    for eid, f in entries:
        fields = {_s(k): _s(v) for k, v in f.items()}
        epoch = _num(fields.get("epoch"), int)
        if epoch is None:
            continue
        # each shard counts its own epochs; entries without a shard are shard 0's
        key = (_num(fields.get("shard"), int) or 0, epoch)
        if fields.get("event") == "acquired":
            acquired[key] = {
                "epoch": epoch, "shard": key[0], "id": _s(eid),
                "time_ms": _num(fields.get("time_ms"), int),
                "new": fields.get("new", ""), "old": fields.get("old") or None,
                "reason": fields.get("reason", ""), "node": fields.get("node", ""),
                "gap_ms": None}
        elif fields.get("event") == "first_result":
            gaps[key] = _num(fields.get("gap_ms"), int)  # type: ignore[assignment]
    for key, gap in gaps.items():
        if key in acquired:
            acquired[key]["gap_ms"] = gap
    newest = sorted(acquired.values(), key=lambda a: a["time_ms"] or 0, reverse=True)
    return newest[:limit]


def _shards(leases: list[ShardLease], replicas: list[dict]) -> list[dict]:
    """Each shard's leader (and its node), epoch, lease time left and cameras; each replica
    gets ``shards_led``."""
    node_of = {r.get("id"): r.get("node") for r in replicas}
    out = [{"shard": sh.shard, "leader": sh.leader, "node": node_of.get(sh.leader),
            "epoch": sh.epoch, "lease_ttl_ms": sh.lease_ms_left,
            "cameras": list(sh.cameras) if sh.cameras is not None else None}
           for sh in leases]
    for r in replicas:
        r["shards_led"] = [sh["shard"] for sh in out if sh["leader"] == r.get("id")]
    return out


class ClusterMonitor:
    """Builds and shares the snapshot; see the module doc."""

    def __init__(self, client: redis.Redis, cameras: CameraStats, lease_ttl_ms: int,
                 target: RedisTarget | None = None) -> None:
        self.redis, self.cameras = client, cameras
        self.lease_ttl_ms = lease_ttl_ms
        self.scripts = Scripts(client)
        self.sentinels = SentinelWatch(target) if target is not None and target.sentinels \
            else None
        self._cond = threading.Condition()
        self._snapshot: dict | None = None
        self._version = 0
        self._wanted_until = 0.0
        self._thread: threading.Thread | None = None

    # ---- sharing -------------------------------------------------------------------------
    def _want(self) -> None:
        with self._cond:
            self._wanted_until = time.monotonic() + IDLE_AFTER_S
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="cluster-monitor")
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                if time.monotonic() > self._wanted_until:
                    self._thread = None
                    return
            snap = self.build()
            with self._cond:
                self._snapshot = snap
                self._version += 1
                self._cond.notify_all()
            time.sleep(1.0)

    def snapshot(self, timeout_s: float = 5.0) -> dict:
        """The latest snapshot (waiting for the first one after an idle period)."""
        self._want()
        with self._cond:
            fresh = self._snapshot and time.time() - self._snapshot["time"] < 3
            if not fresh:
                start = self._version
                self._cond.wait_for(lambda: self._version != start, timeout=timeout_s)
            if self._snapshot is None:
                return self.build()
            return self._snapshot

    def updates(self) -> Iterator[dict | None]:
        """Each new snapshot as it is built, or None after a second without one."""
        seen = -1
        while True:
            self._want()
            with self._cond:
                self._cond.wait_for(lambda n=seen: self._version != n, timeout=1.0)
                snap, version = self._snapshot, self._version
            if snap is None or version == seen:
                yield None
                continue
            seen = version
            yield snap

    # ---- building ------------------------------------------------------------------------
    def build(self) -> dict:
        """Read everything once and return the snapshot (never raises on Redis errors)."""
        now = time.time()
        snap: dict = {"time": round(now, 3), "redis": {"ok": True}, "alerts": []}
        try:
            self._from_redis(snap, now)
        except REDIS_DOWN_ERRORS as exc:
            snap["redis"] = {"ok": False, "error": str(exc)[:200]}
            snap.setdefault("leader", None)
        except redis.RedisError as exc:
            log.warning("cluster snapshot: %s", exc)
            snap["redis"] = {"ok": False, "error": str(exc)[:200]}
            snap.setdefault("leader", None)
        if self.sentinels is not None:
            snap["sentinels"] = self.sentinels.state()
        self._nodes_and_services(snap)
        snap["cameras"] = list(self.cameras.snapshot().values())
        snap["alerts"] = alerts(snap)
        return snap

    def _from_redis(self, snap: dict, now: float) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zremrangebyscore(keys.HEARTBEATS, "-inf", now - 3600)
        pipe.zrangebyscore(keys.HEARTBEATS, now - 120, "+inf")
        hb_keys = pipe.execute()[1]
        minute = int(now // 60)
        pipe.xrevrange(keys.FAILOVERS, count=4 * FAILOVER_HISTORY)
        pipe.info()
        pipe.hgetall(keys.INGEST_RESPONSES)
        pipe.hgetall(keys.ingest_responses_minute(minute - 1))
        pipe.hgetall(keys.ingest_responses_minute(minute))
        pipe.get(keys.SWARM_SNAPSHOT)
        for k in hb_keys:
            pipe.hgetall(k)
        (failovers, info, replies_total, replies_prev, replies_now, swarm_raw,
         *beats) = pipe.execute()
        leases = read_shards(self.redis)
        snap["_swarm_raw"] = swarm_raw
        heartbeats: dict[str, list[dict]] = {}
        for k, fields in zip(hb_keys, beats, strict=True):
            if not fields:
                continue  # expired between SCAN and HGETALL
            service, instance = keys.heartbeat_parts(_s(k))
            hb = _hb(fields, now)
            hb.setdefault("id", instance)
            hb["service"] = service
            heartbeats.setdefault(service, []).append(hb)
        for items in heartbeats.values():
            items.sort(key=lambda h: (h.get("node", ""), h.get("id", "")))
        snap["heartbeats"] = heartbeats
        history = failover_history(failovers)
        snap["failovers"] = history
        snap["redis_failovers"] = redis_history(failovers)
        leader_id = leases[0].leader
        replicas = heartbeats.get("inference", [])
        snap["replicas"] = replicas
        snap["epoch"] = leases[0].epoch
        leader = None
        if leader_id:
            hb = next((r for r in replicas if r.get("id") == leader_id), {})
            since = next((f["time_ms"] for f in history if f["epoch"] == snap["epoch"]
                          and f["shard"] == 0 and f["new"] == leader_id), None)
            leader = {
                "id": leader_id, "node": hb.get("node"), "epoch": snap["epoch"],
                "lease_ttl_ms": leases[0].lease_ms_left,
                "lease_ttl_setting_ms": self.lease_ttl_ms,
                "since_ms": since,
                "lease_age_s": round(max(0.0, now - since / 1000), 1) if since else None,
                "fps": hb.get("fps"), "lag_ms": hb.get("lag_ms"), "model": hb.get("model"),
                "backend": hb.get("backend"), "device": hb.get("device"),
                "heartbeat_age_s": hb.get("age_s"),
            }
        snap["leader"] = leader
        snap["shards"] = _shards(leases, replicas)
        snap["standbys"] = warm_standbys(replicas, len(leases), leader_id)
        snap["redis"] = {
            "ok": True, "version": info.get("redis_version"),
            "used_memory": info.get("used_memory"),
            "used_memory_human": info.get("used_memory_human"),
            "used_memory_peak_human": info.get("used_memory_peak_human"),
            "maxmemory": info.get("maxmemory"),
            "maxmemory_human": info.get("maxmemory_human"),
            "connected_clients": info.get("connected_clients"),
            "blocked_clients": info.get("blocked_clients"),
            "ops_per_sec": info.get("instantaneous_ops_per_sec"),
            "uptime_s": info.get("uptime_in_seconds"),
            "aof_enabled": bool(info.get("aof_enabled")),
            **replication(info),
        }
        try:
            snap["redis"]["primary"] = primary_address(self.redis)
            if info.get("run_id") and snap["redis"]["role"] == "master":
                record_primary(self.redis, self.scripts, _s(info["run_id"]),
                               snap["redis"]["primary"], int(now * 1000))
        except redis.RedisError as exc:  # a read-only replica, a failover under way
            log.warning("could not note the Redis primary: %s", exc)
        ingest = heartbeats.get("ingest", [])

        def total(name: str) -> float:
            return round(sum(h.get(name) or 0.0 for h in ingest), 2)

        def by_status(h: dict) -> dict[str, int]:
            return {_s(k): int(v) for k, v in sorted(h.items())}

        snap["ingest"] = {
            "instances": ingest,
            "requests_per_s": total("requests_per_s"),
            "accepted_per_s": total("accepted_per_s"),
            "errors_per_s": total("errors_per_s"),
            "replies_total": by_status(replies_total),
            "replies_last_minute": by_status(replies_prev),
            "replies_this_minute": by_status(replies_now),
        }
        snap["web"] = {"instances": heartbeats.get("web", [])}

    def _nodes_and_services(self, snap: dict) -> None:
        heartbeats = snap.get("heartbeats", {})
        by_node: dict[str, list[dict]] = {}
        for service, items in heartbeats.items():
            for h in items:
                by_node.setdefault(h.get("node") or "?", []).append(
                    {"service": service, "id": h.get("id"), "pid": h.get("pid"),
                     "role": h.get("role"), "version": h.get("version"),
                     "age_s": h.get("age_s"), "uptime_s": h.get("uptime_s")})
        swarm, docker_error = self._swarm(snap.pop("_swarm_raw", None))
        if swarm is not None:
            nodes = swarm.nodes
            for n in nodes:
                n["instances"] = by_node.pop(n["name"], [])
            for name, inst in sorted(by_node.items()):  # beats from nodes Docker does not know
                nodes.append({"name": name, "role": "?", "state": "unknown (not in swarm)",
                              "availability": "?", "address": "", "instances": inst})
            snap["nodes"], snap["services"] = nodes, swarm.services
            snap["nodes_source"] = "docker"
        else:
            snap["nodes"] = [
                {"name": name, "role": None, "state": "up", "availability": None,
                 "address": None, "instances": inst,
                 "last_beat_age_s": min((i["age_s"] for i in inst if i["age_s"] is not None),
                                        default=None)}
                for name, inst in sorted(by_node.items())]
            services: dict[str, dict] = {}
            for service, items in sorted(heartbeats.items()):
                services[service] = {
                    "name": service, "mode": None, "desired": None, "running": len(items),
                    "image": None,
                    "tasks": [{"node": h.get("node"), "state": "running", "id": h.get("id"),
                               "role": h.get("role"), "since": h.get("started")}
                              for h in items]}
            snap["services"] = list(services.values())
            snap["nodes_source"] = "heartbeats"
        snap["docker"] = {"available": swarm is not None, "error": docker_error,
                          "source": "swarmwatch",
                          "node": swarm.node if swarm is not None else None}

    @staticmethod
    def _swarm(raw: bytes | None) -> tuple[SwarmSnapshot | None, str | None]:
        """The swarmwatch snapshot, or None and why not (a bad value is counted, logged at
        most once a minute and ignored)."""
        if raw is None:
            return None, "no swarm snapshot (is cctv swarmwatch running on a manager?)"
        try:
            swarm = decode_snapshot(raw)
        except EntryError as exc:
            BAD_SWARM.inc()
            _warn.warning("swarm", "ignoring a bad swarm snapshot in %s: %s",
                          keys.SWARM_SNAPSHOT, exc)
            return None, "bad swarm snapshot (ignored)"
        if not swarm.ok:
            return None, f"swarmwatch on {swarm.node}: Docker API unavailable ({swarm.error})"
        return swarm, None


def alerts(snap: dict) -> list[dict]:
    """The red (critical) and amber (warning) states of a snapshot."""
    out: list[dict] = []

    def add(level: str, code: str, message: str, **extra: object) -> None:
        out.append({"level": level, "code": code, "message": message, **extra})

    if not snap.get("redis", {}).get("ok"):
        add("critical", "redis_down", "Redis is unreachable: "
            + str(snap.get("redis", {}).get("error", "")))
        return out
    shards = snap.get("shards") or []
    if len(shards) > 1:
        unled = [s for s in shards if not s.get("leader")]
        if unled:
            add("critical", "no_leader", "No inference leader for shard "
                + ", ".join(f"{s['shard']} ({', '.join(s.get('cameras') or []) or 'no camera'})"
                            for s in unled))
    elif not snap.get("leader"):
        add("critical", "no_leader", "No inference leader: no replica holds the lease")
    if not snap.get("standbys"):
        add("critical", "standby_missing",
            "No warm standby: a failure of the leader stops detection until Swarm restarts it")
    for cam in snap.get("cameras", []):
        name = cam["camera"]
        if cam.get("silent"):
            age = cam.get("last_frame_age_s")
            add("critical", "camera_silent",
                f"Camera {name} is silent" + (f" for {age:.0f} s" if age is not None else ""),
                camera=name)
        elif cam.get("lag_growing"):
            add("critical", "lag_growing",
                f"Camera {name}: consumer lag growing ({cam.get('consumer_lag')} frames)",
                camera=name)
        elif cam.get("status") == "no_results":
            add("warning", "no_results", f"Camera {name}: frames arrive but no results",
                camera=name)
    for r in snap.get("redis", {}).get("replicas", []):
        if r.get("state") != "online":
            add("warning", "redis_replica_down",
                f"Redis replica {r.get('addr')} is {r.get('state')}: frames are acknowledged "
                "with fewer copies", server=r.get("addr"))
    sentinels = snap.get("sentinels", [])
    if sentinels:
        if not snap.get("redis", {}).get("replicas"):
            add("critical", "redis_no_replica",
                "Redis has no replica: the loss of its node loses what it holds, and with "
                "min-replicas-to-write it refuses frames")
        for t in sentinels:
            if not t.get("ok") or t.get("down"):
                add("warning", "sentinel_down",
                    f"Redis Sentinel {t['addr']} " + ("does not answer" if not t.get("ok")
                                                      else "judges the primary down"),
                    server=t["addr"])
    for n in snap.get("nodes", []):
        if snap.get("nodes_source") == "docker" and n.get("state") not in ("ready",):
            add("warning", "node_down", f"Node {n['name']} is {n.get('state')}", node=n["name"])
    for s in snap.get("services", []):
        if snap.get("nodes_source") == "docker" and s.get("desired") is not None \
                and s["running"] < s["desired"]:
            add("warning", "service_degraded",
                f"Service {s['name']}: {s['running']}/{s['desired']} tasks running",
                service=s["name"])
    return out
