"""A corrupted tracker state in Redis (cctv:track:{cam}) costs the ids of that moment, counted
and logged, never a replica: real ingest, a tracking leader and a warm standby (both without
torch, as in the lean CPU image), real clip frames. Before each hand-over the saved state is
replaced by a bad value; the leader of the next epoch must refuse it, start a fresh tracker
numbering after the last published id, and both replicas must stay up and keep processing."""

from __future__ import annotations

import json
import os
import pickle
import re
import struct

import pytest
import requests
from events_support import wait_for, without_torch

from cctv.core import keys
from cctv.inference import trackstate

from support import (
    MODEL_OPENVINO,
    FrameSender,
    Service,
    clip_jpegs,
    free_port,
    service_env,
    wait_port,
)

#: camera tokens of the test registry (ingest refuses tokens under 20 characters)
TOK1 = "tok1-16charsfortests"

CAM = "cam1"


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _header(blob: bytes, **changes) -> bytes:
    n = struct.unpack_from("<7sBI", blob)[2]
    header = {**json.loads(blob[12:12 + n]), **changes}
    head = json.dumps(header).encode()
    return blob[:8] + struct.pack("<I", len(head)) + head + blob[12 + n:]


def _huge_float(blob: bytes) -> bytes:
    n = struct.unpack_from("<7sBI", blob)[2]
    return blob[:12 + n] + struct.pack("<d", 1e300) + blob[12 + n + 8:]


def variants(marker: str) -> dict:
    """name -> (make bad value from the leader's valid one, the reason it is counted under)"""
    return {
        "garbage bytes": (lambda b: os.urandom(2000), "format"),
        "an old pickle that runs a command": (
            lambda b: pickle.dumps({"v": 1, "kind": "bytetrack", "tracker": _Evil(marker)}),
            "format"),
        "wrong version": (lambda b: b[:7] + bytes([1]) + b[8:], "version"),
        "wrong types": (lambda b: _header(b, frame="12", tracks="x"), "values"),
        "huge values": (lambda b: _header(b, next_id=10**40), "values"),
        "a huge float": (_huge_float, "values"),
        "truncated": (lambda b: b[:len(b) // 2], "format"),
    }


def leader_caught_up(rdb) -> bool:
    """The current leader has read every frame and has none pending. (A deposed leader may
    still hold a frame it read in the moment before it noticed; that is not this test's
    concern.)"""
    leader = rdb.get(keys.LEASE_INFERENCE)
    last = rdb.xrevrange(keys.frames(CAM), count=1)
    if leader is None or not last:
        return False
    groups = {g["name"]: g for g in rdb.xinfo_groups(keys.frames(CAM))}
    group = groups.get(keys.INFER_GROUP.encode())
    if group is None or group["last-delivered-id"] != last[0][0]:
        return False
    mine = [c for c in rdb.xinfo_consumers(keys.frames(CAM), keys.INFER_GROUP)
            if c["name"] == leader]
    return not mine or mine[0]["pending"] == 0


def rejected(port: int) -> int:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return int(sum(float(v) for v in re.findall(
        r'^cctv_inference_track_state_rejected_total\{[^}]*\} (\S+)$', text, re.M)))


def results(rdb, epoch: int | None = None) -> list[list[dict]]:
    return [json.loads(f[b"dets"]) for _i, f in rdb.xrange(keys.detections(CAM))
            if epoch is None or f[b"epoch"] == str(epoch).encode()]


def max_id(res: list[list[dict]]) -> int:
    return max((d["track"] for r in res for d in r if "track" in d), default=0)


@pytest.mark.slow
def test_a_corrupted_tracker_state_starts_a_fresh_tracker_and_no_replica_dies(
        redis_server, rdb, tmp_path) -> None:
    # the state saved after every processed frame: a loaded machine's leader skips frames
    common = {"cameras": f"{CAM}:tok1-16charsfortests", "tracker": "bytetrack",
              "lease_ttl_ms": 1000,
              "track_state_every": 1}
    ingest_port = free_port()
    ingest = Service(["ingest"], service_env(redis_server.url, ingest_bind=f"127.0.0.1:"
                                             f"{ingest_port}", ingest_workers=1, **common),
                     tmp_path, "ingest")
    ports = {"a": free_port(), "b": free_port()}

    def replica(name: str) -> Service:
        env = service_env(redis_server.url, model=MODEL_OPENVINO,
                          inference_http_bind=f"127.0.0.1:{ports[name]}", **common)
        return Service(["inference", "--id", name], without_torch(env, tmp_path), tmp_path,
                       f"inference-{name}")

    services = [ingest]
    marker = tmp_path / "pwned"
    jpegs = clip_jpegs(n=400, step=3)
    seq = 0

    def send(n: int) -> None:
        """``n`` clip frames at 10 fps, then wait until the leader has done them all."""
        nonlocal seq
        sender = FrameSender(f"http://127.0.0.1:{ingest_port}", CAM, TOK1,
                             jpegs[seq % 300:seq % 300 + n], 10, first_seq=seq).start()
        try:
            wait_for(lambda: len(sender.accepted) + len(sender.failed) >= n, 60, "frames sent")
        finally:
            sender.stop()
        seq = sender.seq
        assert not sender.failed
        wait_for(lambda: leader_caught_up(rdb), 60, "the leader to catch up", services)

    try:
        wait_port(ingest_port, 30, ingest.proc)
        a = replica("a")
        services.append(a)
        wait_for(lambda: rdb.get(keys.LEASE_INFERENCE) == b"a", 120, "a to lead", [a])
        b = replica("b")
        services.append(b)
        wait_for(lambda: rdb.hget(keys.heartbeat("inference", "b"), "role") == b"standby", 120,
                 "b to stand by", [b])
        send(30)
        assert max_id(results(rdb)) > 0, "the leader tracks"
        for counted, (name, (make, reason)) in enumerate(variants(str(marker)).items(), 1):
            good = rdb.get(keys.track_state(CAM))
            assert good is not None
            trackstate.decode(good, "bytetrack", 30)  # what the leader saves is valid
            rdb.set(keys.track_state(CAM), make(good))
            last_id = max_id(results(rdb))
            epoch = int(rdb.get(keys.EPOCH_INFERENCE))
            rdb.delete(keys.LEASE_INFERENCE)  # a new leadership, which loads the saved state
            wait_for(lambda e=epoch: int(rdb.get(keys.EPOCH_INFERENCE)) > e
                     and rdb.get(keys.LEASE_INFERENCE) is not None, 30,
                     f"a new leader ({name})", services)
            new_epoch = int(rdb.get(keys.EPOCH_INFERENCE))
            send(15)
            after = results(rdb, new_epoch)
            assert after, f"{name}: no results in epoch {new_epoch}"
            print(f"{name}: epoch {new_epoch}, {len(after)} results, leader "
                  f"{rdb.get(keys.LEASE_INFERENCE)}")
            for svc in services:
                assert svc.proc.poll() is None, f"{name}: {svc.name} exited\n{svc.log()[-3000:]}"
            wait_for(lambda c=counted: rejected(ports["a"]) + rejected(ports["b"]) == c, 10,
                     f"the rejection of {name} to be counted", services)
            ids = {d["track"] for r in after for d in r if "track" in d}
            assert ids and min(ids) > last_id, f"{name}: a fresh tracker reused ids {ids}"
            assert reason in "".join(s.log() for s in services[1:])
        logs = "".join(s.log() for s in services[1:])
        assert logs.count("saved tracker state rejected") == len(variants(str(marker))), logs
        assert "Traceback" not in logs, logs[-3000:]
        assert not marker.exists(), "a value in Redis ran a command"
        trackstate.decode(rdb.get(keys.track_state(CAM)), "bytetrack", 30)
    finally:
        for svc in reversed(services):
            svc.stop()
