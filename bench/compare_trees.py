"""Compare the inference replica of two source trees on the same machine, interleaved:
the kill -9 take-over gap and the pipeline throughput over the bare model.

    git worktree add --detach /tmp/old-tree <commit>
    .venv/bin/python -m bench.compare_trees --old /tmp/old-tree/services [--rounds 3] [--record]

Each round runs the old tree's replicas, then this tree's (A B A B ...), each side on a fresh
redis-server with this tree's ingest (only the inference processes differ: PYTHONPATH points at
the tree's ``services/``). Per side and round:

* failover: two replicas, two cameras at 10 fps, ``--kills`` kill -9 take-overs of the leader;
  the round's figure is the median gap (last result of the old leader -> first of the new one,
  timed by Redis in the result script, as bench/failover.py);
* pipeline: one replica (tracking off), two cameras offering 1.2x the bare model's rate; the
  round's figure is processed frames/s over the mean of the bare model run right before and
  right after (as bench/pipeline.py's ``pipeline_over_bare_ratio``).

Printed: each side's median/min/max, and new ÷ old per round (median/min/max). With
``--record``, the ratios are recorded under ``split_*`` keys (bench/record.py), never over the
headline figures of bench/failover.py and bench/pipeline.py.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bench.pipeline import model_fps, pipeline_fps  # noqa: E402
from bench.record import record  # noqa: E402
from cctv.core import keys  # noqa: E402
from cctv.inference.detector import load_detector  # noqa: E402

from support import (  # noqa: E402
    MODEL_OPENVINO,
    RedisServer,
    Service,
    clip_jpegs,
    free_port,
    service_env,
    start_listening,
    wait_for,
)
from test_failover import Cluster, leader, role_of, take_over_rounds  # noqa: E402

TOKENS = [("cam1", "tok1-compare-16chars"), ("cam2", "tok2-compare-16chars")]
CAMS = ",".join(f"{c}:{t}" for c, t in TOKENS)


def tree_env(services: Path, redis_url: str, **cctv: object) -> dict[str, str]:
    """:func:`support.service_env`, with the inference code taken from ``services``."""
    env = service_env(redis_url, **cctv)
    env["PYTHONPATH"] = os.pathsep.join([str(services), str(ROOT / "pi")])
    return env


class TreeCluster(Cluster):
    """The failover test's cluster, its replicas run from another tree."""

    def __init__(self, redis_server: RedisServer, tmp: Path, services: Path) -> None:
        self.services = services
        super().__init__(redis_server, tmp)

    def replica(self, name: str) -> Service:
        svc = Service(["inference", "--id", name], tree_env(
            self.services, self.redis_server.url, cameras=CAMS, model=MODEL_OPENVINO,
            inference_http_bind=f"127.0.0.1:{free_port()}"), self.tmp, f"inference-{name}")
        self.replicas[name] = svc
        return svc


def failover_gap_s(services: Path, jpegs: list[bytes], kills: int, tmp: Path
                   ) -> tuple[list[float], list[float]]:
    """(gaps, gaps less the new leader's first model call) of ``kills`` kill -9 take-overs
    with replicas from ``services``."""
    server = RedisServer().start()
    rdb = server.client()
    c = TreeCluster(server, tmp, services)
    try:
        a = c.replica("a")
        wait_for(lambda: leader(rdb) == "a", 120, "replica a to lead", [a])
        b = c.replica("b")
        wait_for(lambda: role_of(rdb, "b") == "standby", 120, "replica b to stand by", [b])
        c.send(jpegs, fps=10)
        rounds = take_over_rounds(c, rdb, signal.SIGKILL, kills)
        c.stop_senders()
        for sender in c.senders:
            sender.account(rdb).check()  # nothing lost on either side
        return [r.gap_s for r in rounds], [r.takeover_s for r in rounds]
    finally:
        c.close()
        server.stop()


def pipeline_ratio(services: Path, det, decoded: list[np.ndarray], jpegs: list[bytes],
                   dur_s: float, tmp: Path) -> tuple[float, float, float]:
    """(pipeline ÷ bare, pipeline fps, bare fps) with one replica from ``services``."""
    server = RedisServer().start()
    rdb = server.client()
    ingest_port, ingest = start_listening(lambda port: Service(
        ["ingest"], service_env(server.url, cameras=CAMS, camera_fps_limit=1000,
                                ingest_bind=f"127.0.0.1:{port}", ingest_workers=2),
        tmp, f"ingest-{port}"))
    infer = Service(["inference", "--id", "bench"], tree_env(
        services, server.url, cameras=CAMS, model=MODEL_OPENVINO, tracker="none",
        inference_http_bind=f"127.0.0.1:{free_port()}"), tmp, "inference-bench")
    try:
        wait_for(lambda: rdb.get(keys.LEASE_INFERENCE) is not None, 120, "a leader", [infer])
        bare_before, _ = model_fps(det, decoded)
        fps = pipeline_fps(rdb, f"http://127.0.0.1:{ingest_port}",
                           TOKENS, jpegs, bare_before * 1.2,
                           dur_s)
        bare_after, _ = model_fps(det, decoded)
    finally:
        infer.stop()
        ingest.stop()
        server.stop()
    bare = (bare_before + bare_after) / 2
    return fps / bare, fps, bare


def spread(values: list[float]) -> str:
    return (f"median {statistics.median(values):.3f}, min {min(values):.3f}, "
            f"max {max(values):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", type=Path, default=Path("/tmp/old-tree/services"),
                    help="the other tree's services/ folder (side A)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kills", type=int, default=2, help="kill -9 take-overs per side and round")
    ap.add_argument("--pipeline-s", type=float, default=10.0)
    ap.add_argument("--bare-frames", type=int, default=40,
                    help="frames of each bare model run (before and after each pipeline run)")
    ap.add_argument("--failover-only", action="store_true", help="skip the pipeline runs")
    ap.add_argument("--record", action="store_true", help="record the ratios (split_* keys)")
    args = ap.parse_args()
    sides = {"old": args.old.resolve(), "new": ROOT / "services"}
    if not (sides["old"] / "cctv" / "inference").is_dir():
        raise SystemExit(f"{sides['old']} holds no cctv/inference")

    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="cctv-bench-compare-"))
    jpegs = clip_jpegs(n=120, step=2)
    decoded = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
    det = load_detector(str(MODEL_OPENVINO), backend="openvino")
    model_fps(det, decoded[:20])  # warm
    gaps: dict[str, list[float]] = {"old": [], "new": []}
    takeovers: dict[str, list[float]] = {"old": [], "new": []}
    ratios: dict[str, list[float]] = {"old": [], "new": []}
    loads = []
    for r in range(args.rounds):
        for side, services in sides.items():  # A B, A B, ...
            logs = tmp / f"round{r + 1}-{side}"
            logs.mkdir()
            g, t = failover_gap_s(services, jpegs[:60], args.kills, logs)
            gaps[side].append(statistics.median(g))
            takeovers[side].append(statistics.median(t))
            line = (f"round {r + 1} {side}: kill -9 gaps {g} s (median {statistics.median(g):.3f}; "
                    f"less the first model call {t})")
            if not args.failover_only:
                ratio, fps, bare = pipeline_ratio(services, det, decoded[:args.bare_frames],
                                                  jpegs, args.pipeline_s, logs)
                ratios[side].append(ratio)
                line += f"; pipeline {fps:.1f} ÷ bare {bare:.1f} fps = {ratio:.3f}"
            loads.append(os.getloadavg()[0])
            print(f"{line}; load {loads[-1]:.2f}", flush=True)
            time.sleep(1)
    gap_ratio = [n / o for n, o in zip(gaps["new"], gaps["old"], strict=True)]
    to_ratio = [n / o for n, o in zip(takeovers["new"], takeovers["old"], strict=True)]
    for side in sides:
        print(f"{side}: kill -9 gap s {spread(gaps[side])}; less the first model call "
              f"{spread(takeovers[side])}")
    print(f"new ÷ old, per round: kill -9 gap {spread(gap_ratio)}; less the first model call "
          f"{spread(to_ratio)}")
    if not args.failover_only:
        pipe_ratio = [n / o for n, o in zip(ratios["new"], ratios["old"], strict=True)]
        print(f"pipeline ÷ bare: old {spread(ratios['old'])}; new {spread(ratios['new'])}; "
              f"new ÷ old per round {spread(pipe_ratio)}")
    print(f"service logs in {tmp}")
    print(f"load average: at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, "
          f"during the rounds {min(loads):.2f}..{max(loads):.2f}")
    if args.record and not args.failover_only:
        record_comparison(gaps, ratios, loads, args.rounds, args.kills, args.pipeline_s)


def record_comparison(gaps: dict[str, list[float]], ratios: dict[str, list[float]],
                      loads: list[float], rounds: int, kills: int, pipeline_s: float) -> None:
    """Record new ÷ old per round (median, min, max) under the ``split_*`` keys."""
    gap_ratio = [n / o for n, o in zip(gaps["new"], gaps["old"], strict=True)]
    pipe_ratio = [n / o for n, o in zip(ratios["new"], ratios["old"], strict=True)]
    figures = {
        "split_failover_gap_new_over_old_ratio": round(statistics.median(gap_ratio), 3),
        "split_failover_gap_new_over_old_ratio_min": round(min(gap_ratio), 3),
        "split_failover_gap_new_over_old_ratio_max": round(max(gap_ratio), 3),
        "split_pipeline_new_over_old_ratio": round(statistics.median(pipe_ratio), 3),
        "split_pipeline_new_over_old_ratio_min": round(min(pipe_ratio), 3),
        "split_pipeline_new_over_old_ratio_max": round(max(pipe_ratio), 3),
    }
    md = f"""Command: `.venv/bin/python -m bench.compare_trees --old <other tree>/services
--rounds {rounds}` ({kills} kill -9 take-overs and {pipeline_s:.0f} s of pipeline
per side and round, old and new tree alternating; the inference replicas are the only processes
that differ). Load average while it ran: {min(loads):.1f}–{max(loads):.1f} (a shared 2-core
machine), so only the ratios within the run mean anything.

| figure | old tree | new tree | new ÷ old per round, median (min–max) |
| --- | --- | --- | --- |
| kill -9 take-over gap, median of each round (s) | {spread(gaps['old'])} | {spread(gaps['new'])} | **{figures['split_failover_gap_new_over_old_ratio']}** ({figures['split_failover_gap_new_over_old_ratio_min']}–{figures['split_failover_gap_new_over_old_ratio_max']}) |
| pipeline ÷ bare model | {spread(ratios['old'])} | {spread(ratios['new'])} | **{figures['split_pipeline_new_over_old_ratio']}** ({figures['split_pipeline_new_over_old_ratio_min']}–{figures['split_pipeline_new_over_old_ratio_max']}) |
"""
    record(figures, "Inference replica split: old tree vs new", md)
    print(figures)


if __name__ == "__main__":
    main()
