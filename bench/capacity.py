"""Capacity: the most cameras at 5 fps each that this machine serves with one inference replica,
at imgsz 640 (the shipped OpenVINO int8 IR, the CPU default) and 320 (an OpenVINO IR prepared
from the .pt with ``cctv model prepare --imgsz 320``).

    .venv/bin/python -m bench.capacity            # ~10 minutes on 2 cores

Everything runs on this one machine: redis-server, ingest, one inference replica (default
settings) and the cameras (a Python thread each, posting a 1280x720 clip's JPEGs at 5 fps).
For each count of cameras, after a warm-up, a window of results is read back:

* capture -> result latency of each result (``done`` - ``ts``, both this machine's clock);
* the model call each result went through: its ``infer_ms`` (the call's time per frame) times
  the results of that call (they share ``done``);
* frames dropped by the live policy (behind, stale) among the frames accepted in the window.

A count is served when p95 latency <= 2 x the median model call and <= 1 % of the frames are
dropped. Counts go up until more than 5 % are dropped; the figure is the largest count served.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bench.record import record  # noqa: E402
from cctv.core import keys  # noqa: E402

from support import (  # noqa: E402
    MODEL_OPENVINO,
    MODEL_PT,
    SHARED,
    FrameSender,
    RedisServer,
    Service,
    clip_jpegs,
    free_port,
    service_env,
    start_listening,
    wait_for,
)

FPS = 5.0
#: the looser bound also reported: the result before the camera's next frame
FRAME_INTERVAL_MS = 1000 / FPS
WARM_S = float(os.environ.get("CCTV_BENCH_WARM_S", "4"))
WINDOW_S = float(os.environ.get("CCTV_BENCH_WINDOW_S", "10"))
COUNTS = [int(n) for n in os.environ.get(
    "CCTV_BENCH_COUNTS", "2,4,6,8,10,12,14,16,20,24,28,32,40,48,56,64").split(",")]
MAX_CAMERAS = COUNTS[-1]
TOKEN = "capacity-bench-token-0001"
#: a 1280x720 street clip: what a CCTV camera sends (the default test clip is 640x480)
CLIP_720P = SHARED / "media" / "highway_traffic.mp4"


def cams(n: int) -> list[str]:
    return [f"cap{i:02d}" for i in range(n)]


def prepare_320(out: Path) -> Path:
    """An OpenVINO IR of the .pt exported at 320 (``cctv model prepare``)."""
    subprocess.run([sys.executable, "-m", "cctv", "model", "prepare", str(MODEL_PT),
                    "--imgsz", "320", "--target", "openvino", "--out", str(out),
                    "--no-compare"], check=True, timeout=900, capture_output=True)
    found = [p for p in out.rglob("*.xml")]
    if not found:
        raise RuntimeError(f"cctv model prepare left no IR in {out}")
    return found[0].parent


def window(rdb, names: list[str], t0_us: int, t1_us: int) -> dict:
    """Latencies, model calls and drops of the frames captured in [t0, t1]."""
    lat_ms, processed, dropped = [], 0, Counter()
    parts: dict[str, list[float]] = {"send": [], "queue": [], "leader": []}
    for cam in names:
        results = [f for _i, f in rdb.xrange(keys.detections(cam), count=100000)]
        for f in results:
            ts = int(f[b"ts"])
            if t0_us <= ts <= t1_us:
                processed += 1
                lat_ms.append((int(f[b"done"]) - ts) / 1000)
                rx, pick, done = int(f[b"rx"]), int(f[b"pick"]), int(f[b"done"])
                parts["send"].append((rx - ts) / 1000)  # the POST until ingest has it
                parts["queue"].append((pick - rx) / 1000)  # in Redis until the leader reads
                parts["leader"].append((done - pick) / 1000)  # decode, model, track, publish
        accepted_ids = {eid.decode() for eid, _f in rdb.xrange(
            keys.frames(cam), min=t0_us // 1000, max=t1_us // 1000)}
        for _i, f in rdb.xrange(keys.drops(cam)):
            reason = f[b"reason"].decode()
            for fid in f[b"ids"].decode().split(","):
                if fid in accepted_ids:
                    dropped[reason] += 1
    # the model calls: results of one call share `done` (over every camera)
    by_call: dict[bytes, list[float]] = {}
    for cam in names:
        for _i, f in rdb.xrange(keys.detections(cam), count=100000):
            if t0_us <= int(f[b"ts"]) <= t1_us:
                by_call.setdefault(f[b"done"], []).append(float(f[b"infer_ms"]))
    calls_ms = [v[0] * len(v) for v in by_call.values()]
    total = processed + sum(dropped.values())
    lat_ms.sort()
    return {
        "processed": processed, "dropped": dict(dropped),
        "drop_frac": sum(dropped.values()) / total if total else 1.0,
        "p95_ms": lat_ms[int(0.95 * (len(lat_ms) - 1))] if lat_ms else float("inf"),
        "call_ms": statistics.median(calls_ms) if calls_ms else float("inf"),
        "frames_per_call": round(processed / len(calls_ms), 2) if calls_ms else 0.0,
        "parts_ms": {k: round(statistics.median(v), 1) if v else None
                     for k, v in parts.items()},
    }


def run_size(label: str, model: Path, imgsz: int, jpegs: list[bytes]
             ) -> tuple[int, int, list]:
    server = RedisServer().start()
    rdb = server.client()
    tmp = Path(tempfile.mkdtemp(prefix=f"cctv-bench-capacity-{label}-"))
    registry = ",".join(f"{c}:{TOKEN}" for c in cams(MAX_CAMERAS))
    port, ingest = start_listening(lambda p: Service(
        ["ingest"], service_env(server.url, cameras=registry, ingest_bind=f"127.0.0.1:{p}"),
        tmp, f"ingest-{p}"))
    infer = Service(["inference", "--id", "cap"], service_env(
        server.url, cameras=registry, model=model, imgsz=imgsz,
        inference_http_bind=f"127.0.0.1:{free_port()}"), tmp, "inference")
    rows, best, best_live = [], 0, 0
    try:
        wait_for(lambda: rdb.get(keys.LEASE_INFERENCE) is not None, 180, "the leader",
                 [infer])
        single = float(rdb.hget(keys.heartbeat("inference", "cap"), "ms_per_frame") or 0)
        for step, n in enumerate(COUNTS):
            names = cams(n)
            senders = [FrameSender(f"http://127.0.0.1:{port}", c, TOKEN, jpegs, FPS,
                                   first_seq=(step + 1) * 1_000_000).start() for c in names]
            time.sleep(WARM_S)
            t0 = time.time_ns() // 1000
            time.sleep(WINDOW_S)
            t1 = time.time_ns() // 1000
            for s in senders:
                s.stop()
            time.sleep(2.0)  # the last frames of the window get their fate
            w = window(rdb, names, t0, t1)
            refused = sum(len(s.failed) for s in senders)
            ok = (w["p95_ms"] <= 2 * w["call_ms"] and w["drop_frac"] <= 0.01
                  and refused == 0)
            live = w["p95_ms"] <= FRAME_INTERVAL_MS and w["drop_frac"] <= 0.01 and refused == 0
            rows.append((n, w, refused, ok, live))
            if live:
                best_live = n
            print(f"{label}: {n:2d} cameras: p95 {w['p95_ms']:.0f} ms, model call "
                  f"{w['call_ms']:.0f} ms ({w['frames_per_call']} frames), dropped "
                  f"{100 * w['drop_frac']:.2f} % {w['dropped']}, refused {refused}, median "
                  f"parts {w['parts_ms']} -> {'served' if ok else 'NOT served'}"
                  f"{'' if ok else ' (within one frame interval)' if live else ''}", flush=True)
            if ok:
                best = n
            if w["drop_frac"] > 0.05:
                break  # saturated: more cameras only drop more
            time.sleep(1.0)
    finally:
        infer.stop()
        ingest.stop()
        server.stop()
    return best, best_live, [single, *rows]


def main() -> None:
    jpegs = clip_jpegs(CLIP_720P, n=60, step=3)
    ir320 = prepare_320(Path(tempfile.mkdtemp(prefix="cctv-bench-ir320-")))
    best640, live640, rows640 = run_size("640", MODEL_OPENVINO, 640, jpegs)
    best320, live320, rows320 = run_size("320", ir320, 320, jpegs)
    figures = {"cameras_at_5fps_cpu_640": best640, "cameras_at_5fps_cpu_320": best320,
               "cameras_at_5fps_cpu_640_within_frame_interval": live640,
               "cameras_at_5fps_cpu_320_within_frame_interval": live320}

    def table(rows: list) -> str:
        single, *steps = rows
        lines = [f"One-frame model call when warm: {single:.1f} ms.", "",
                 "| cameras | p95 capture → result | model call (frames per call) | parts: "
                 "send / in Redis / leader | dropped | refused | served | within 200 ms |",
                 "| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        for n, w, refused, ok, live in steps:
            p = w["parts_ms"]
            lines.append(f"| {n} | {w['p95_ms']:.0f} ms | {w['call_ms']:.0f} ms "
                         f"({w['frames_per_call']}) | {p['send']} / {p['queue']} / "
                         f"{p['leader']} ms | {100 * w['drop_frac']:.2f} % | "
                         f"{refused} | {'yes' if ok else '**no**'} | "
                         f"{'yes' if live else 'no'} |")
        return "\n".join(lines)

    md = f"""Command: `.venv/bin/python -m bench.capacity`. One machine runs everything: redis-server,
ingest, one inference replica with the default settings (`CCTV_INFERENCE_BATCH=1`), and the
cameras (a Python thread each, posting a 1280×720 street clip at {FPS:.0f} fps: their CPU is taken from
the pipeline's, so a real site with cameras elsewhere does at least this well). Each count runs
{WARM_S:.0f} s warm-up + {WINDOW_S:.0f} s measured. A count is served when the p95 capture → result
latency is at most 2 × the median model call (the call a frame went through: the leader runs
one call on the newest frame of every camera that has one) and at most 1 % of the frames
accepted in the window were dropped by the live policy. Counts go up until more than 5 % are
dropped; the figure is the largest count served. The parts are medians: the POST until ingest
stored the frame, the wait in Redis until the leader read it, and the leader's part (decode,
the wait for the call in progress, the model, tracking, publishing).

| figure | value | goal |
| --- | --- | --- |
| cameras at 5 fps, imgsz 640 (shipped OpenVINO int8 IR) | **{best640}** | |
| cameras at 5 fps, imgsz 320 (OpenVINO IR from `cctv model prepare --imgsz 320`, fp32) | **{best320}** | ≥ 20 |
| the same with p95 ≤ one frame interval (200 ms) instead of 2 × the model call, 640 / 320 | {live640} / {live320} | |

Why the strict bound is hard to meet here: a frame that arrives while the leader's call for
other cameras is under way waits for that call, then goes through its own, and decoding,
tracking and publishing come on top; so p95 sits near 2.5–3 × the call at every load. The
looser bound says how many cameras get every result before their next frame.

imgsz 640:

{table(rows640)}

imgsz 320:

{table(rows320)}
"""
    record(figures, "Capacity (cameras at 5 fps)", md)
    print(figures)


if __name__ == "__main__":
    main()
