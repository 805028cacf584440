"""Performance guard: a few minutes of the pipeline benchmark's own measurements
(bench/pipeline.py), as ratios within one run, interleaved A B A B so that a busy machine slows
both sides alike. The floors sit well under the goals: noise passes, a real regression (a
slower leader loop, a slower ingest path) fails. The full figures stay in `bench/`."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.pipeline import (
    capacity_jpeg,
    model_fps,
    pipeline_fps,
    raw_xadd_fps,
    start_capacity_ingest,
    wrk_ingest,
)
from cctv.core import keys
from cctv.inference.detector import load_detector

from support import MODEL_OPENVINO, Service, clip_jpegs, free_port, service_env, wait_for, wait_port

#: goal of pipeline throughput / bare model (docs/benchmarks.md, figure
#: pipeline_over_bare_ratio); the guard fails below 0.7 of it
PIPELINE_OVER_BARE_GOAL = 0.90
#: ingest / raw XADD as recorded with wrk (figure ingest_over_raw_xadd_ratio, where ingest
#: reaches its goal of >= 1,500 frames/s); the guard fails below 0.7 of it
INGEST_OVER_RAW_RECORDED = 0.076
FLOOR = 0.7
ROUNDS = 3
MAX_ROUNDS = 5


def _median_ratio(a: list[float], b: list[float]) -> tuple[float, list[float]]:
    """Rounds B A B A ... B: each A against the mean of the B right before and after it."""
    ratios = [x / ((b[i] + b[i + 1]) / 2) for i, x in enumerate(a)]
    return statistics.median(ratios), [round(r, 3) for r in ratios]


def _behind(rdb, cams: list[tuple[str, str]]) -> int:
    return sum(int(rdb.hget(keys.stats(c), "dropped_behind") or 0) for c, _t in cams)


@pytest.mark.slow
def test_pipeline_keeps_up_with_the_bare_model(redis_server, rdb, tmp_path: Path) -> None:
    jpegs = clip_jpegs(n=60, step=2)
    frames = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs[:40]]
    # four cameras, each offering half the bare rate: the leader takes the newest frame of each
    # camera per round, so every camera has a fresh one whenever it comes back (saturated),
    # and no single sender thread has to post fast on a loaded machine
    cams = [(f"cam{i}", f"tok{i}-16charsfortests") for i in range(1, 5)]
    env = {"cameras": ",".join(f"{c}:{t}" for c, t in cams)}
    port = free_port()
    ingest = Service(["ingest"], service_env(redis_server.url, camera_fps_limit=1000,
                                             ingest_bind=f"127.0.0.1:{port}", ingest_workers=2,
                                             **env), tmp_path, "ingest")
    # tracking off: the bare detector is what it is compared with
    infer = Service(["inference", "--id", "guard"], service_env(
        redis_server.url, model=MODEL_OPENVINO, tracker="none",
        inference_http_bind=f"127.0.0.1:{free_port()}", **env), tmp_path, "inference")
    try:
        det = load_detector(str(MODEL_OPENVINO), backend="openvino")
        wait_port(port, 30, ingest.proc)
        wait_for(lambda: rdb.get(keys.LEASE_INFERENCE) is not None, 120, "the leader",
                 [infer])
        bare = [model_fps(det, frames)[0]]
        piped: list[float] = []
        saturated: list[bool] = []
        # up to MAX_ROUNDS until ROUNDS of them saturated the leader: only then is what it
        # processed its capacity rather than what the senders managed to post
        for i in range(MAX_ROUNDS):
            behind0 = _behind(rdb, cams)
            # offer twice what the bare model just managed (the surplus is dropped and
            # counted): the pipeline is never starved when the machine speeds up mid-round;
            # long enough for about 30 processed frames on a slow machine
            piped.append(pipeline_fps(rdb, f"http://127.0.0.1:{port}", cams, jpegs,
                                      2.0 * bare[-1], dur_s=min(15.0, max(5.0, 30 / bare[-1])),
                                      warm_s=2,
                                      first_seq=i * 100_000))
            saturated.append(_behind(rdb, cams) > behind0)
            bare.append(model_fps(det, frames)[0])
            if sum(saturated) >= ROUNDS:
                break
        assert infer.proc.poll() is None, infer.log()[-2000:]
    finally:
        infer.stop()
        ingest.stop()
    _all, ratios = _median_ratio(piped, bare)
    kept = [r for r, sat in zip(ratios, saturated, strict=True) if sat]
    floor = FLOOR * PIPELINE_OVER_BARE_GOAL
    detail = (f"rounds {ratios}, saturated {saturated}; pipeline fps {piped}, "
              f"bare fps {bare}")
    print(f"pipeline / bare: {detail}")
    assert kept, f"no round saturated the pipeline (the senders could not keep up): {detail}"
    ratio = statistics.median(kept)
    assert ratio >= floor, f"pipeline / bare model {ratio:.3f} < floor {floor:.3f} ({detail})"


@pytest.mark.slow
def test_ingest_keeps_up_with_raw_xadd(redis_server, rdb, tmp_path: Path) -> None:
    if not shutil.which("wrk"):
        pytest.skip("wrk is not installed (apt-get install wrk; ./dev setup does)")
    big = capacity_jpeg()
    port = free_port()
    ingest = start_capacity_ingest(redis_server.url, port, tmp_path)
    try:
        raw = [raw_xadd_fps(rdb, big, 1500)]
        ingested: list[float] = []
        for _ in range(ROUNDS):
            ingested.append(wrk_ingest(f"http://127.0.0.1:{port}", big, tmp_path, dur=3))
            raw.append(raw_xadd_fps(rdb, big, 1500))
        assert ingest.proc.poll() is None, ingest.log()[-2000:]
    finally:
        ingest.stop()
    ratio, ratios = _median_ratio(ingested, raw)
    floor = FLOOR * INGEST_OVER_RAW_RECORDED
    print(f"ingest / raw XADD: median {ratio:.4f} (rounds {ratios}; ingest {ingested}, "
          f"raw {raw})")
    assert ratio >= floor, (f"ingest / raw XADD {ratio:.4f} < floor {floor:.4f} "
                            f"(rounds {ratios}; ingest fps {ingested}, raw XADD/s {raw})")
