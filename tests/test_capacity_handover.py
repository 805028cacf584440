"""Capacity-aware leadership: a much faster standby (a GPU replica beside a CPU one) gets the
lease by a planned hand-over; the slower replica stays a valid standby and takes over when the
fast one dies; two alike replicas never swap on measurement noise."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from cctv.core import keys
from cctv.inference.capacity import comparable, measure_ms_per_frame, outclassed

from support import MODEL_OPENVINO, Service, free_port, service_env, wait_for

NOW = 1_000_000.0


def beat(id_: str, ms: float, *, device: str = "cpu", role: str = "standby", ready: str = "1",
         age: float = 0.5, source: str = "measured") -> dict:
    return {"id": id_, "ms_per_frame": str(ms), "device": device, "role": role,
            "ready": ready, "beat": str(NOW - age), "ms_source": source}


def test_only_a_much_faster_comparable_replica_outclasses_another() -> None:
    cpu = beat("cpu", 80.0, role="leader")
    gpu = beat("gpu", 6.0, device="cuda:0")
    assert outclassed([cpu, gpu], 0.5) == {"cpu"}
    # of several GPUs, none outclasses another (alike devices, measured times)
    assert outclassed([cpu, beat("gpu2", 9.0, device="0"), gpu], 0.5) == {"cpu"}
    # not fast enough: nobody
    assert outclassed([cpu, beat("g", 50.0, device="cuda:0")], 0.5) == set()
    # two CPU replicas with measured times never swap, however the measurement came out
    assert outclassed([cpu, beat("cpu2", 10.0)], 0.5) == set()
    assert not comparable(cpu, beat("cpu2", 10.0))
    # a time set by hand is compared; ratio 0 turns hand-overs off
    assert outclassed([cpu, beat("cpu2", 10.0, source="set")], 0.5) == {"cpu"}
    assert outclassed([cpu, gpu], 0.0) == set()
    # garbage in a heartbeat is ignored
    assert outclassed([cpu, {"id": "x", "ms_per_frame": "fast", "device": "0"}], 0.5) == set()


def test_the_time_per_frame_is_the_median_of_model_calls() -> None:
    calls = []

    def detect(frames):
        calls.append(frames[0].shape)
        time.sleep(0.01)

    ms = measure_ms_per_frame(detect, runs=3)
    assert len(calls) == 3 and 8 <= ms < 200


def _replica(redis_server, tmp_path, name: str, ms: float) -> Service:
    return Service(["inference", "--id", name], service_env(
        redis_server.url, model=MODEL_OPENVINO, inference_ms_per_frame=ms,
        inference_http_bind=f"127.0.0.1:{free_port()}"), tmp_path, f"inference-{name}")


def _leader(rdb) -> str | None:
    raw = rdb.get(keys.LEASE_INFERENCE)
    return raw.decode() if raw else None


def test_a_faster_standby_gets_the_lease_and_the_slow_one_stays_its_standby(
        redis_server, rdb, tmp_path) -> None:
    slow = _replica(redis_server, tmp_path, "slow", 90.0)
    fast = None
    try:
        wait_for(lambda: _leader(rdb) == "slow", 90, "the slow replica to lead", [slow])
        fast = _replica(redis_server, tmp_path, "fast", 9.0)
        wait_for(lambda: _leader(rdb) == "fast", 90, "the hand-over to the fast replica",
                 [slow, fast])
        acquired = [f for _i, f in rdb.xrange(keys.FAILOVERS) if f[b"event"] == b"acquired"]
        last = acquired[-1]
        assert (last[b"new"], last[b"old"], last[b"reason"]) == (b"fast", b"slow", b"released")
        assert "shard 0 handed over to fast" in slow.log()
        wait_for(lambda: rdb.hget(keys.heartbeat("inference", "slow"), "role") == b"standby",
                 10, "the slow replica to stand by", [slow])
        time.sleep(3)  # no swap back
        assert _leader(rdb) == "fast"
        out = subprocess.run([sys.executable, "-m", "cctv", "status"], capture_output=True,
                             text=True, env=service_env(redis_server.url), timeout=60)
        assert "leader:   fast" in out.stdout, out.stdout
        assert "cpu 9.00ms/frame" in out.stdout and "cpu 90.00ms/frame" in out.stdout
        # the fast one dies: the slow one is a valid standby and takes over on expiry
        fast.signal(signal.SIGKILL)
        wait_for(lambda: _leader(rdb) == "slow", 15, "the slow replica to take over", [slow])
    finally:
        slow.stop()
        if fast is not None:
            fast.stop()


def test_status_lists_the_capture_instances_and_their_cameras(rdb) -> None:
    from cctv.status import cluster_status

    now = time.time()
    key = keys.heartbeat("capture", "node1-77")
    rdb.hset(key, mapping={"node": "node1", "cameras": "door,gate", "count": 2, "beat": now})
    rdb.zadd(keys.HEARTBEATS, {key: now})
    st = cluster_status(rdb)
    assert [(c["id"], c["cameras"]) for c in st["capture"]] == [("node1-77", "door,gate")]
