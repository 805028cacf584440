"""Batching benchmark: frames/s of the CPU default backend (OpenVINO) with one model call per
frame (batch 1) vs one call per several cameras' frames (CCTV_INFERENCE_BATCH), same frames,
same run.

    .venv/bin/python -m bench.batching              # ~2 minutes on 2 cores

Batch sizes 2, 4 and 8 are timed once each to find the best; then batch 1 and the best
alternate for CCTV_BENCH_ROUNDS rounds (A B A B ...). Records ``batching_speedup_cpu`` (the
median of the rounds' best-over-1 ratios, with ``_min`` and ``_max``) and
``batching_best_batch_cpu``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bench.record import record  # noqa: E402
from cctv.inference.detector import load_detector  # noqa: E402

from support import MODEL_OPENVINO, clip_jpegs  # noqa: E402

ROUNDS = int(os.environ.get("CCTV_BENCH_ROUNDS", "3"))
FRAMES = 48  # divisible by every batch size tried


def fps(det, frames: list[np.ndarray], batch: int) -> float:
    """Frames/s of ``det`` on ``frames``, ``batch`` frames per call."""
    det.detect(frames[:batch])  # warm the batch shape
    t0 = time.perf_counter()
    for i in range(0, len(frames), batch):
        det.detect(frames[i:i + batch])
    return len(frames) / (time.perf_counter() - t0)


def main() -> None:
    frames = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)
              for j in clip_jpegs(n=FRAMES, step=3)]
    single = load_detector(str(MODEL_OPENVINO), backend="openvino")
    batched = {b: load_detector(str(MODEL_OPENVINO), backend="openvino", batch=b)
               for b in (2, 4, 8)}
    first = {b: fps(det, frames, b) for b, det in batched.items()}
    base = fps(single, frames, 1)
    best = max(first, key=first.get)
    print(f"batch 1: {base:.1f} fps; " + ", ".join(f"batch {b}: {v:.1f} fps"
                                                  for b, v in first.items()), flush=True)
    ones, bests, ratios = [], [], []
    for r in range(ROUNDS):
        ones.append(fps(single, frames, 1))
        bests.append(fps(batched[best], frames, best))
        ratios.append(bests[-1] / ones[-1])
        print(f"round {r + 1}: batch 1 {ones[-1]:.1f} fps, batch {best} {bests[-1]:.1f} fps "
              f"-> {ratios[-1]:.3f}", flush=True)
    figures = {"batching_speedup_cpu": round(statistics.median(ratios), 3),
               "batching_speedup_cpu_min": round(min(ratios), 3),
               "batching_speedup_cpu_max": round(max(ratios), 3),
               "batching_best_batch_cpu": best}
    print(figures)
    record(figures, "Batching across cameras (CPU)", f"""
`python -m bench.batching`: yolov8n int8 OpenVINO at 640 px, {FRAMES} frames of the sample
clip (640×480), pre-decoded; `detect()` called with 1 frame per call (batch 1) or with
`batch` frames per call (one model call per chunk, `CCTV_INFERENCE_BATCH`).

| batch | frames/s (first pass) |
| --- | --- |
| 1 | {base:.1f} |
""" + "".join(f"| {b} | {v:.1f} |\n" for b, v in first.items()) + f"""
Batch 1 vs batch {best}, {ROUNDS} alternating rounds: {", ".join(f"{a:.1f}/{b:.1f}" for a, b in
zip(ones, bests, strict=True))} fps → speedup **{figures["batching_speedup_cpu"]}** (min
{figures["batching_speedup_cpu_min"]}, max {figures["batching_speedup_cpu_max"]}).
""")


if __name__ == "__main__":
    main()
