"""Tracking survives a failover: the standby that takes over after a kill -9 restores the
leader's tracker from Redis and the same objects keep their ids (real processes, real clip;
the replicas cannot import torch, as in the lean CPU image)."""

from __future__ import annotations

import json
import signal

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


@pytest.mark.slow
def test_track_ids_continue_after_a_kill9_takeover(redis_server, rdb, tmp_path,
                                                   artifacts_dir) -> None:
    common = {"cameras": f"{CAM}:tok1-16charsfortests", "tracker": "bytetrack"}
    ingest_port = free_port()
    ingest = Service(["ingest"], service_env(redis_server.url, ingest_bind=f"127.0.0.1:"
                                             f"{ingest_port}", ingest_workers=1, **common),
                     tmp_path, "ingest")

    def replica(name: str) -> Service:
        env = service_env(redis_server.url, model=MODEL_OPENVINO,
                          inference_http_bind=f"127.0.0.1:{free_port()}", **common)
        return Service(["inference", "--id", name], without_torch(env, tmp_path), tmp_path,
                       f"inference-{name}")

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
    last = [d for d in before[-1] if d.get("track") is not None]
    ids_before = {d["track"] for r in before for d in r if d.get("track") is not None}
    # the same object before and after the take-over: the same class, overlapping boxes
    pairs = []
    for d in after[0] + after[1]:
        if d.get("track") is None:
            continue
        match = max(last, key=lambda e: iou(e["xyxy"], d["xyxy"]) if e["name"] == d["name"]
                    else -1, default=None)
        if match is not None and iou(match["xyxy"], d["xyxy"]) >= 0.5:
            pairs.append((match["track"], d["track"]))
    same = sum(1 for x, y in pairs if x == y)
    new_ids = {d["track"] for r in after for d in r if d.get("track") is not None} - ids_before
    report = {"pairs": len(pairs), "same_id": same, "ids_before": len(ids_before),
              "new_ids_after": sorted(new_ids), "max_id_before": max(ids_before)}
    (artifacts_dir / "failover_tracking.json").write_text(json.dumps(report, indent=1))
    print("failover tracking:", report)
    assert len(pairs) >= 3, report
    assert same >= 0.9 * len(pairs), f"ids changed over the take-over: {pairs}"
    assert all(i > max(ids_before) for i in new_ids), "a new track reused an old id"
