"""Tracking survives a failover: the standby that takes over after a kill -9 (of the leader,
or of the leader of a camera's shard) restores the leader's tracker from Redis and the same
objects keep their ids (real processes, real clip; the replicas cannot import torch, as in the
lean CPU image)."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

import pytest
from events_support import iou, wait_for, without_torch

from cctv.core import keys

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


def results(rdb, epoch: int) -> list[list[dict]]:
    return [json.loads(f[b"dets"]) for _i, f in rdb.xrange(keys.detections(CAM))
            if f[b"epoch"] == str(epoch).encode()]


def _pipeline(redis_server, tmp_path, label: str, **cctv: object
              ) -> tuple[int, Service, Callable[[str], Service]]:
    """Start ingest for the camera; returns its port, the service, and a function that starts
    an inference replica (without torch, ByteTrack) by name."""
    common = {"cameras": f"{CAM}:tok1-16charsfortests", "tracker": "bytetrack", **cctv}
    ingest_port = free_port()
    ingest = Service(["ingest"], service_env(redis_server.url, ingest_bind=f"127.0.0.1:"
                                             f"{ingest_port}", ingest_workers=1, **common),
                     tmp_path, f"ingest-{label}")

    def replica(name: str) -> Service:
        env = service_env(redis_server.url, model=MODEL_OPENVINO,
                          inference_http_bind=f"127.0.0.1:{free_port()}", **common)
        return Service(["inference", "--id", name], without_torch(env, tmp_path), tmp_path,
                       f"inference-{label}-{name}")

    return ingest_port, ingest, replica


def _track_ids(results: list[list[dict]]) -> set[int]:
    """Every track id in ``results``."""
    return {d["track"] for r in results for d in r if d.get("track") is not None}


def _same_objects(before: list[list[dict]], after: list[list[dict]]) -> list[tuple[int, int]]:
    """(track id before, after) of the objects of the last result before a move that the
    first results after it show again (same class, IoU >= 0.5)."""
    last = [d for d in before[-1] if d.get("track") is not None]
    pairs = []
    for d in after[0] + after[1]:
        if d.get("track") is None:
            continue
        match = max(last, key=lambda e: iou(e["xyxy"], d["xyxy"]) if e["name"] == d["name"]
                    else -1, default=None)
        if match is not None and iou(match["xyxy"], d["xyxy"]) >= 0.5:
            pairs.append((match["track"], d["track"]))
    return pairs


@pytest.mark.slow
def test_track_ids_continue_after_a_kill9_takeover(redis_server, rdb, tmp_path,
                                                   artifacts_dir) -> None:
    ingest_port, ingest, replica = _pipeline(redis_server, tmp_path, "failover")
    a = replica("a")
    services = [ingest, a]
    sender = None
    try:
        wait_port(ingest_port, 30, ingest.proc)
        wait_for(lambda: rdb.get(keys.LEASE_INFERENCE) == b"a", 120, "a to lead", [a])
        b = replica("b")
        services.append(b)
        wait_for(lambda: rdb.hget(keys.heartbeat("inference", "b"), "role") == b"standby", 120,
                 "b to stand by", [b])
        # the clip at its real speed (every 3rd frame at 10 fps) from the parked cars' frames
        jpegs = clip_jpegs(n=150, step=3)
        sender = FrameSender(f"http://127.0.0.1:{ingest_port}", CAM, TOK1, jpegs, 10).start()
        wait_for(lambda: len(results(rdb, 1)) >= 40, 60, "tracked results from a", [a])
        assert rdb.exists(keys.track_state(CAM)), "the leader saves its tracker"
        a.signal(signal.SIGKILL)
        wait_for(lambda: len(results(rdb, 2)) >= 20, 60, "results from b", [b])
        sender.stop()
    finally:
        if sender is not None:
            sender.stop()
        for svc in reversed(services):
            svc.stop()
    log_b = b.log()
    assert "tracker state restored" in log_b, log_b[-3000:]
    before, after = results(rdb, 1), results(rdb, 2)
    ids_before = _track_ids(before)
    # the same object before and after the take-over: the same class, overlapping boxes
    pairs = _same_objects(before, after)
    same = sum(1 for x, y in pairs if x == y)
    new_ids = _track_ids(after) - ids_before
    report = {"pairs": len(pairs), "same_id": same, "ids_before": len(ids_before),
              "new_ids_after": sorted(new_ids), "max_id_before": max(ids_before)}
    (artifacts_dir / "failover_tracking.json").write_text(json.dumps(report, indent=1))
    print("failover tracking:", report)
    assert len(pairs) >= 3, report
    assert same >= 0.9 * len(pairs), f"ids changed over the take-over: {pairs}"
    assert all(i > max(ids_before) for i in new_ids), "a new track reused an old id"


@pytest.mark.slow
def test_track_ids_continue_when_a_shard_moves_to_another_replica(redis_server, rdb,
                                                                  tmp_path) -> None:
    rdb.flushall()
    ingest_port, ingest, replica = _pipeline(redis_server, tmp_path, "shards",
                                             inference_shards=2)
    services = [ingest, replica("a"), replica("b")]
    sender = None
    try:
        wait_port(ingest_port, 30, ingest.proc)
        leases = [keys.shard_keys(k).lease for k in range(2)]
        wait_for(lambda: set(rdb.mget(leases)) == {b"a", b"b"}, 120,
                 "one shard for each replica", services)
        jpegs = clip_jpegs(n=150, step=3)
        sender = FrameSender(f"http://127.0.0.1:{ingest_port}", CAM, TOK1, jpegs, 10).start()
        wait_for(lambda: rdb.hget(keys.INFERENCE_CAMERA_SHARDS, CAM) is not None, 30,
                 "the camera's shard", services)
        sk = keys.shard_keys(int(rdb.hget(keys.INFERENCE_CAMERA_SHARDS, CAM)))
        holder, epoch = rdb.get(sk.lease).decode(), int(rdb.get(sk.epoch))
        wait_for(lambda: len(results(rdb, epoch)) >= 40, 60, "tracked results", services)
        # the shard's leader dies: the other replica takes the shard and its trackers
        victim = next(s for s in services[1:] if s.log_path.name.endswith(f"-{holder}.log"))
        victim.signal(signal.SIGKILL)
        wait_for(lambda: len(results(rdb, epoch + 1)) >= 20, 60, "results after the move",
                 services)
        assert rdb.get(sk.lease) not in (None, holder.encode())
        sender.stop()
    finally:
        if sender is not None:
            sender.stop()
        for svc in reversed(services):
            svc.stop()
    before, after = results(rdb, epoch), results(rdb, epoch + 1)
    pairs = _same_objects(before, after)
    ids_before = _track_ids(before)
    new_ids = _track_ids(after) - ids_before
    assert len(pairs) >= 3, pairs
    assert sum(1 for x, y in pairs if x == y) >= 0.9 * len(pairs), \
        f"ids changed when the shard moved: {pairs}"
    assert all(i > max(ids_before) for i in new_ids), "a new track reused an old id"
