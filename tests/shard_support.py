"""A sharded inference cluster of real processes: redis-server (given), ingest, cameras posting
through it, and inference replicas splitting the cameras into shards. Used by the shard tests
and bench/shards.py."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

from cctv.core import keys

from support import (
    MODEL_OPENVINO,
    FrameSender,
    Service,
    free_port,
    service_env,
    start_listening,
    wait_for,
)


def camera_names(n: int) -> list[str]:
    """``cam01`` ... ``camNN``."""
    return [f"cam{i:02d}" for i in range(1, n + 1)]


def token_of(camera: str) -> str:
    """The test token of ``camera`` (ingest refuses tokens under 20 characters)."""
    return f"{camera}-token-for-the-tests"


class ShardCluster:
    """ingest + inference replicas with ``shards`` shards over ``cameras`` cameras."""

    def __init__(self, redis_url: str, tmp: Path, cameras: int, shards: int,
                 **replica_env: object) -> None:
        self.redis_url, self.tmp, self.shards = redis_url, tmp, shards
        self.cameras = camera_names(cameras)
        self.replica_env = replica_env
        self.registry = ",".join(f"{c}:{token_of(c)}" for c in self.cameras)
        self.replicas: dict[str, Service] = {}
        self.senders: list[FrameSender] = []
        self.ingest_port, self.ingest = start_listening(lambda port: Service(
            ["ingest"], service_env(redis_url, cameras=self.registry,
                                    ingest_bind=f"127.0.0.1:{port}", ingest_workers=1),
            tmp, f"ingest-{port}"))

    def cameras_of(self, rdb, shard: int) -> list[str]:
        """The cameras of ``shard`` (as the replicas assigned them)."""
        want = str(shard).encode()
        return sorted(c.decode() for c, k in rdb.hgetall(keys.INFERENCE_CAMERA_SHARDS).items()
                      if k == want)

    def replica(self, name: str) -> Service:
        """Start replica ``name`` (a real ``cctv inference`` process)."""
        svc = Service(["inference", "--id", name], service_env(
            self.redis_url, cameras=self.registry, model=MODEL_OPENVINO,
            inference_shards=self.shards, inference_http_bind=f"127.0.0.1:{free_port()}",
            **self.replica_env), self.tmp, f"inference-{name}-{len(self.replicas)}")
        self.replicas[name] = svc
        return svc

    def send(self, jpegs: list[bytes], fps: float) -> None:
        """Every camera posts ``jpegs`` at ``fps`` through ingest."""
        url = f"http://127.0.0.1:{self.ingest_port}"
        self.senders = [FrameSender(url, c, token_of(c), jpegs, fps).start()
                        for c in self.cameras]

    def close(self) -> None:
        for s in self.senders:
            s.stop()
        for svc in [*self.replicas.values(), self.ingest]:
            svc.signal(signal.SIGCONT)
            svc.stop()


def holders(rdb, shards: int) -> dict[int, str | None]:
    """Who leads each shard now."""
    pipe = rdb.pipeline()
    for k in range(shards):
        pipe.get(keys.shard_keys(k).lease)
    return {k: (v.decode() if v else None) for k, v in enumerate(pipe.execute())}


def loads(rdb, shards: int) -> dict[str, int]:
    """Shards led per replica."""
    out: dict[str, int] = {}
    for h in holders(rdb, shards).values():
        if h:
            out[h] = out.get(h, 0) + 1
    return out


def wait_even(rdb, shards: int, names: list[str], timeout_s: float, logs) -> None:
    """Until every shard is led and ``names`` each lead shards // len(names) or one more."""
    lo = shards // len(names)

    def even() -> bool:
        h = holders(rdb, shards)
        got = loads(rdb, shards)
        return all(h.values()) and set(got) == set(names) and \
            all(lo <= n <= lo + 1 for n in got.values())

    wait_for(even, timeout_s, f"the {shards} shards spread evenly over {names}", logs)


@dataclass
class ShardMove:
    """A shard's new leadership and the measured gap in its results."""

    shard: int
    epoch: int
    new: str
    old: str
    reason: str
    gap_s: float  # the shard's last result of the old leader -> first of the new, Redis time
    first_model_call_s: float

    @property
    def takeover_s(self) -> float:
        """The gap less the new leader's first model call (CPU-bound on a busy machine)."""
        return round(self.gap_s - self.first_model_call_s, 3)


def moves_since(rdb, cluster: ShardCluster, after_id: str) -> list[ShardMove]:
    """The shard leaderships acquired after stream id ``after_id`` of cctv:failovers that
    published a first result, with their gaps."""
    entries = [(i.decode(), {k.decode(): v.decode() for k, v in f.items()})
               for i, f in rdb.xrange(keys.FAILOVERS, min=f"({after_id}")]
    acquired = {(f["shard"], f["epoch"]): f for _i, f in entries if f.get("event") == "acquired"}
    out = []
    for _i, f in entries:
        if f.get("event") != "first_result" or (f.get("shard"), f["epoch"]) not in acquired:
            continue
        shard, epoch = int(f["shard"]), int(f["epoch"])
        a = acquired[(f["shard"], f["epoch"])]
        firsts = [(tuple(map(int, i.decode().split("-"))), d)
                  for c in cluster.cameras_of(rdb, shard) for i, d in
                  rdb.xrange(keys.detections(c), min=f"({after_id}")
                  if d[b"epoch"] == str(epoch).encode()]
        model_s = float(min(firsts, key=lambda e: e[0])[1][b"infer_ms"]) / 1000 if firsts \
            else 0.0
        out.append(ShardMove(shard, epoch, a["new"], a.get("old", ""), a["reason"],
                             int(f["gap_ms"]) / 1000, model_s))
    return out


def last_failover_id(rdb) -> str:
    """The id of the newest cctv:failovers entry (0-0 when none)."""
    last = rdb.xrevrange(keys.FAILOVERS, count=1)
    return last[0][0].decode() if last else "0-0"
