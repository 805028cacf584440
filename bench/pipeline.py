"""Pipeline benchmarks on real processes: throughput vs the bare model, transport
overhead, ingest capacity vs raw XADD, MJPEG fan-out CPU, overload latency, CPU backends.

    .venv/bin/python -m bench.pipeline            # ~3 minutes on 2 cores

Writes docs/benchmarks.md (section "Pipeline") and bench/results.json.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bench.record import record  # noqa: E402
from cctv.core import keys  # noqa: E402
from cctv.inference.detector import load_detector  # noqa: E402

from support import (  # noqa: E402
    MODEL_ONNX,
    MODEL_OPENVINO,
    MODEL_PT,
    SHARED,
    VIEWER_PASSWORD,
    VIEWER_USER,
    FrameSender,
    RedisServer,
    Service,
    clip_jpegs,
    free_port,
    service_env,
    wait_port,
)

QUICK = os.environ.get("CCTV_BENCH_QUICK") == "1"
#: rounds of each alternating comparison (A B A B ...)
ROUNDS = int(os.environ.get("CCTV_BENCH_ROUNDS", "3"))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def model_fps(det, frames: list[np.ndarray]) -> tuple[float, float]:
    """(frames/s, median ms per call) of a loaded detector on pre-decoded frames (after a
    warm-up of a few calls: the first include lazy initialisation)."""
    for f in frames[:5]:
        det.detect([f])
    times = []
    start = time.perf_counter()
    for f in frames:
        t = time.perf_counter()
        det.detect([f])
        times.append((time.perf_counter() - t) * 1000)
    return len(frames) / (time.perf_counter() - start), statistics.median(times)


def bare_fps(model: str, frames: list[np.ndarray], backend: str = "auto") -> tuple[float, float]:
    """(frames/s, median ms per call) of the model alone on pre-decoded frames."""
    return model_fps(load_detector(model, backend=backend), frames)


def processed_total(rdb, cams: list[str]) -> int:
    """Frames processed so far over ``cams`` (the per-camera counters)."""
    return sum(int(rdb.hget(keys.stats(c), "processed") or 0) for c in cams)


def pipeline_fps(rdb, url: str, cams: list[tuple[str, str]], jpegs: list[bytes],
                 offered_fps: float, dur_s: float, warm_s: float = 3.0,
                 first_seq: int = 0) -> float:
    """Frames/s the running pipeline processes while ``cams`` ((camera, token) pairs) together
    offer ``offered_fps`` (more than it can take: the rest is dropped and counted), measured
    over ``dur_s`` after ``warm_s``."""
    senders = [FrameSender(url, c, t, jpegs, fps=offered_fps / len(cams),
                           first_seq=first_seq).start() for c, t in cams]
    try:
        time.sleep(warm_s)
        names = [c for c, _t in cams]
        p0, t0 = processed_total(rdb, names), time.monotonic()
        time.sleep(dur_s)
        return (processed_total(rdb, names) - p0) / (time.monotonic() - t0)
    finally:
        for s in senders:
            s.stop()


#: the cameras of the ingest capacity runs: 16 senders, one camera each
CAPACITY_CAMERAS = [(f"c{i}", f"t{i}-capacity-token-16chars") for i in range(16)]


def start_capacity_ingest(redis_url: str, port: int, tmp: Path, name: str = "ingest2"
                          ) -> Service:
    """The ingest of the capacity runs (2 workers x 8 threads, no rate limit), listening."""
    ingest = Service(["ingest"], service_env(redis_url, cameras=",".join(
        f"{c}:{t}" for c, t in CAPACITY_CAMERAS), camera_fps_limit=100000, frames_maxlen=200,
        ingest_bind=f"127.0.0.1:{port}", ingest_workers=2, ingest_threads=8), tmp, name)
    wait_port(port, 30, ingest.proc)
    # the port answers once the first worker is up; clients that connect before the second
    # has booted all stay (keep-alive) on the first, which halves the capacity measured
    deadline = time.monotonic() + 15
    while len(_children(ingest.proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    return ingest


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def capacity_jpeg() -> bytes:
    """The 720p JPEG of the capacity runs."""
    return cv2.imencode(".jpg", cv2.imread(str(SHARED / "media" / "zidane.jpg")),
                        [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def raw_xadd_fps(rdb, payload: bytes, n: int = 3000) -> float:
    """Entries/s of redis-py XADD of ``payload`` (pipelined by 50), the floor under ingest."""
    pipe = rdb.pipeline(transaction=False)
    t0 = time.perf_counter()
    for i in range(n):
        pipe.xadd("bench:raw", {"jpeg": payload, "seq": i}, maxlen=200, approximate=True)
        if i % 50 == 49:
            pipe.execute()
    pipe.execute()
    fps = n / (time.perf_counter() - t0)
    rdb.delete("bench:raw")
    return fps


def proc_cpu_s(pgid: int) -> float:
    """User+system CPU seconds of every process in group ``pgid`` (gunicorn master + workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


WRK_SCRIPT = """
-- each connection is one camera c<i> with its own token and increasing sequence numbers
local counter = 0
function setup(thread)
  thread:set("first", counter)
  counter = counter + 8
end
function init(args)
  conn, seq = 0, 0
  local f = io.open(args[1], "rb"); body = f:read("*a"); f:close()
end
function request()
  local cam = first + (conn % 8)
  conn = conn + 1
  seq = seq + 1
  return wrk.format("POST", "/api/v1/cameras/c" .. cam .. "/frames", {
    ["Content-Type"] = "image/jpeg", ["Authorization"] = "Bearer t" .. cam .. "-capacity-token-16chars",
    ["X-Frame-Seq"] = tostring(seq), ["X-Capture-Ts"] = "1"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("NON2XX %d\\n", summary.errors.status))
end
"""


def wrk_ingest(url: str, jpeg: bytes, tmp: Path, dur: int | None = None) -> float:
    """Accepted frames/s with wrk: 16 connections over 16 cameras (CAPACITY_CAMERAS),
    distinct seqs, for ``dur`` seconds."""
    body, script = tmp / "frame.jpg", tmp / "post.lua"
    body.write_bytes(jpeg)
    script.write_text(WRK_SCRIPT)
    dur = dur or (5 if QUICK else 10)
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{dur}s", "-s", str(script), url, "--",
                          str(body)], capture_output=True, text=True, timeout=dur + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = int(re.search(r"NON2XX (\d+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    if bad:
        print(f"wrk: {bad} of {total} requests were not 2xx", flush=True)
    return rps * (total - bad) / max(total, 1)


def python_ingest(url: str, jpeg: bytes) -> float:
    """Accepted frames/s from 16 Python threads (fallback when wrk is not installed)."""
    counts = [0] * 16
    stop = threading.Event()

    def hammer(i: int) -> None:
        sess = requests.Session()
        seq = 0
        while not stop.is_set():
            r = sess.post(f"{url}/api/v1/cameras/c{i}/frames", data=jpeg, headers={
                "Content-Type": "image/jpeg", "Authorization": f"Bearer t{i}",
                "X-Frame-Seq": str(seq), "X-Capture-Ts": "1"}, timeout=10)
            if r.status_code == 202:
                counts[i] += 1
            seq += 1

    threads = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(16)]
    for t in threads:
        t.start()
    time.sleep(2)
    c0, t0 = sum(counts), time.monotonic()
    time.sleep(5 if QUICK else 10)
    fps = (sum(counts) - c0) / (time.monotonic() - t0)
    stop.set()
    for t in threads:
        t.join(10)
    return fps


def det_entries(rdb, cam: str, since: str = "-") -> list[dict[bytes, bytes]]:
    return [f for _i, f in rdb.xrange(keys.detections(cam), since, "+")]


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cctv-bench-"))
    jpegs = clip_jpegs(n=120, step=2)
    decoded = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
    n_bare = 40 if QUICK else 100

    # --- CPU backends (bare model, pre-decoded frames) ---
    backends = {}
    for label, model, backend in [
        ("OpenVINO runtime (cctv native)", MODEL_OPENVINO, "openvino"),
        ("OpenVINO via ultralytics", MODEL_OPENVINO, "ultralytics"),
        ("ONNX Runtime via ultralytics", MODEL_ONNX, "ultralytics"),
        ("PyTorch via ultralytics", MODEL_PT, "ultralytics"),
    ]:
        backends[label] = bare_fps(str(model), decoded[:n_bare], backend)
        print(f"bare {label}: {backends[label][0]:.1f} fps", flush=True)
    default_fps, model_ms = backends["OpenVINO runtime (cctv native)"]

    server = RedisServer().start()
    rdb = server.client()
    ingest_port, web_port = free_port(), free_port()
    cams = "cam1:tok1-16charsfortests,cam2:tok2-16charsfortests,cam3:tok3-16charsfortests"
    ingest = Service(["ingest"], service_env(server.url, cameras=cams, camera_fps_limit=1000,
                                             ingest_bind=f"127.0.0.1:{ingest_port}",
                                             ingest_workers=2), tmp, "ingest")
    # tracking off: this measures the detection pipeline against the bare detector; what
    # tracking adds is measured by bench/events_bench.py (Events section)
    infer = Service(["inference", "--id", "bench"], service_env(
        server.url, cameras=cams, model=MODEL_OPENVINO, tracker="none",
        inference_http_bind=f"127.0.0.1:{free_port()}"), tmp, "inference")
    web = Service(["web"], service_env(server.url, cameras=cams,
                                       web_bind=f"127.0.0.1:{web_port}"), tmp, "web")
    url = f"http://127.0.0.1:{ingest_port}"
    try:
        wait_port(ingest_port, 30, ingest.proc)
        wait_port(web_port, 30, web.proc)
        while rdb.get(keys.LEASE_INFERENCE) is None:
            time.sleep(0.1)

        # --- 1. pipeline throughput: two cameras together offer 1.2x what the bare model does;
        # rounds alternate bare model and pipeline (A B A B ...), each round's ratio is its
        # pipeline run over the mean of the bare runs right before and after it ---
        two = [("cam1", "tok1-16charsfortests"), ("cam2", "tok2-16charsfortests")]
        bares = [bare_fps(str(MODEL_OPENVINO), decoded[:n_bare], "openvino")[0]]
        pipes, ratios = [], []
        for r in range(ROUNDS):
            pipes.append(pipeline_fps(rdb, url, two, jpegs, bares[-1] * 1.2,
                                      8 if QUICK else 15, first_seq=10_000_000 * (r + 1)))
            bares.append(bare_fps(str(MODEL_OPENVINO), decoded[:n_bare], "openvino")[0])
            ratios.append(pipes[-1] / ((bares[-2] + bares[-1]) / 2))
            print(f"round {r + 1}: pipeline {pipes[-1]:.1f} fps, bare {bares[-2]:.1f} / "
                  f"{bares[-1]:.1f} fps -> ratio {ratios[-1]:.3f}", flush=True)
        pipeline_fps_ = statistics.median(pipes)

        # --- 2. transport overhead at a rate the model keeps up with (one camera, 10 fps) ---
        time.sleep(2)
        last = rdb.xrevrange(keys.detections("cam3"), count=1)
        since = "(" + last[0][0].decode() if last else "-"
        s = FrameSender(url, "cam3", "tok3-16charsfortests", jpegs, fps=10).start()
        time.sleep(8 if QUICK else 15)
        s.stop()
        time.sleep(1)
        ent = det_entries(rdb, "cam3", since)
        transport = [(int(f[b"pick"]) - int(f[b"rx"])) / 1000 for f in ent]
        print(f"transport p50 {pct(transport, 50):.2f} ms p99 {pct(transport, 99):.2f} ms",
              flush=True)

        # --- 4. MJPEG fan-out: web CPU with 1 vs 20 viewers of one camera at 10 fps ---
        # seqs continue past the first cam3 sender's: ingest would take repeats as duplicates
        s = FrameSender(url, "cam3", "tok3-16charsfortests", jpegs, fps=10,
                        first_seq=1_000_000).start()
        fan = {}
        for viewers in (1, 20):
            stop = threading.Event()
            got = [0] * viewers

            def view(i: int, stop: threading.Event = stop, got: list[int] = got) -> None:
                with requests.get(f"http://127.0.0.1:{web_port}/video/cam3.mjpg", stream=True,
                                  auth=(VIEWER_USER, VIEWER_PASSWORD), timeout=30) as r:
                    for chunk in r.iter_content(65536):
                        got[i] += len(chunk)
                        if stop.is_set():
                            return

            threads = [threading.Thread(target=view, args=(i,), daemon=True)
                       for i in range(viewers)]
            for t in threads:
                t.start()
            time.sleep(2)
            c0, w0 = proc_cpu_s(web.proc.pid), time.monotonic()
            time.sleep(6 if QUICK else 10)
            fan[viewers] = (proc_cpu_s(web.proc.pid) - c0) / (time.monotonic() - w0)
            stop.set()
            for t in threads:
                t.join(5)
            assert all(got), "a viewer received nothing"
            print(f"web CPU with {viewers} viewers: {fan[viewers] * 100:.1f} %", flush=True)
        s.stop()

        # --- 5. overload: one camera at 30 fps into a model that manages less (PyTorch; the
        # OpenVINO default is faster than 30 fps on this machine: see the backend table) ---
        infer.stop()
        rdb.delete(keys.LEASE_INFERENCE)
        infer = Service(["inference", "--id", "bench-slow"], service_env(
            server.url, cameras=cams, model=MODEL_PT, tracker="none",
            inference_http_bind=f"127.0.0.1:{free_port()}"), tmp, "inference-slow")
        while rdb.get(keys.LEASE_INFERENCE) is None:
            time.sleep(0.1)
        time.sleep(2)
        last = rdb.xrevrange(keys.detections("cam1"), count=1)
        since = "(" + last[0][0].decode() if last else "-"
        st0 = {k.decode(): int(v) for k, v in rdb.hgetall(keys.stats("cam1")).items()}
        s = FrameSender(url, "cam1", "tok1-16charsfortests", jpegs, fps=30, first_seq=1_000_000).start()
        time.sleep(10 if QUICK else 20)
        s.stop()
        time.sleep(2)
        ent = det_entries(rdb, "cam1", since)
        st1 = {k.decode(): int(v) for k, v in rdb.hgetall(keys.stats("cam1")).items()}
        latency = [(int(f[b"done"]) - int(f[b"ts"])) / 1000 for f in ent]
        infer_ms = statistics.median(float(f[b"infer_ms"]) for f in ent)
        over_acc = st1.get("accepted", 0) - st0.get("accepted", 0)
        over_proc = st1.get("processed", 0) - st0.get("processed", 0)
        over_drop = sum(st1.get(k, 0) - st0.get(k, 0) for k in st1 if k.startswith("dropped_"))
        over_fps = over_proc / (10 if QUICK else 20)
        print(f"overload p95 {pct(latency, 95):.1f} ms, model call {infer_ms:.1f} ms, "
              f"accepted {over_acc} processed {over_proc} dropped {over_drop}", flush=True)
    finally:
        for svc in (web, infer, ingest):
            svc.stop()

    # --- 3. ingest capacity: 16 concurrent senders of a 720p JPEG, no inference; rounds
    # alternate ingest and raw XADD (A B A B ...): the median of each side and of the ratios ---
    big = capacity_jpeg()
    ingest_runs, raw_runs = [], []
    loadgen = "wrk (16 connections, 2 threads)" if shutil.which("wrk") else \
        "Python requests (16 threads)"
    for _r in range(ROUNDS):
        rdb.flushall()
        ingest = start_capacity_ingest(server.url, ingest_port, tmp)
        ingest_runs.append(wrk_ingest(url, big, tmp) if shutil.which("wrk")
                           else python_ingest(url, big))
        ingest.stop()
        rdb.flushall()
        raw_runs.append(raw_xadd_fps(rdb, big))
        print(f"ingest {ingest_runs[-1]:.0f} frames/s ({len(big) // 1024} KB), raw XADD "
              f"{raw_runs[-1]:.0f}/s", flush=True)
    server.stop()
    ingest_fps, raw_fps = statistics.median(ingest_runs), statistics.median(raw_runs)
    ingest_ratios = [i / r for i, r in zip(ingest_runs, raw_runs, strict=True)]

    figures = {
        "pipeline_over_bare_ratio": round(statistics.median(ratios), 3),
        "pipeline_over_bare_ratio_min": round(min(ratios), 3),
        "pipeline_over_bare_ratio_max": round(max(ratios), 3),
        "ingest_frames_per_s_min": round(min(ingest_runs), 1),
        "ingest_frames_per_s_max": round(max(ingest_runs), 1),
        "transport_p50_ms": round(pct(transport, 50), 2),
        "transport_p99_ms": round(pct(transport, 99), 2),
        "ingest_frames_per_s": round(ingest_fps, 1),
        "ingest_over_raw_xadd_ratio": round(statistics.median(ingest_ratios), 3),
        "mjpeg_web_cpu_20_over_1_viewers_ratio": round(fan[20] / max(fan[1], 1e-6), 2),
        "overload_latency_p95_over_model_ms_ratio": round(pct(latency, 95) / infer_ms, 2),
        "pipeline_fps_cpu_default_backend": round(pipeline_fps_, 1),
    }
    rows = "\n".join(f"| {k} | {fps:.1f} | {ms:.1f} |" for k, (fps, ms) in backends.items())
    md = f"""Command: `PYTHONPATH=services:pi .venv/bin/python -m bench.pipeline` (tracking off, see the
Events section for its cost; model yolov8n int8 at 640 px, clip
`intersection_cctv.mp4` 640×480; all services are real processes on loopback sharing the 2
cores with the load generators).

| figure | value | goal |
| --- | --- | --- |
| pipeline throughput ÷ bare model (OpenVINO, same frames; 2 cameras offering 1.2× the bare rate), median of {ROUNDS} alternating rounds | **{figures['pipeline_over_bare_ratio']}** (min {figures['pipeline_over_bare_ratio_min']}, max {figures['pipeline_over_bare_ratio_max']}; pipeline {", ".join(f"{x:.1f}" for x in pipes)} fps, bare {", ".join(f"{x:.1f}" for x in bares)} fps) | ≥ 0.90 |
| transport ingest receive → inference pickup, p50 / p99 | **{figures['transport_p50_ms']} / {figures['transport_p99_ms']} ms** | ≤ 2 / ≤ 10 ms |
| ingest capacity, 16 concurrent senders ({loadgen} on the same machine), {len(big) // 1024} KB 720p JPEG, median of {ROUNDS} rounds | **{ingest_fps:.0f} frames/s** (min {min(ingest_runs):.0f}, max {max(ingest_runs):.0f}) | ≥ 1,500/s |
| raw redis-py XADD of the same payload (pipelined), alternating with ingest | {raw_fps:.0f}/s → ingest ÷ raw = {figures['ingest_over_raw_xadd_ratio']} (median of the rounds' ratios) | |
| web CPU, 1 vs 20 MJPEG viewers of one camera | {fan[1] * 100:.1f} % vs {fan[20] * 100:.1f} % → ×{figures['mjpeg_web_cpu_20_over_1_viewers_ratio']} | flat |
| overload, one camera at 30 fps into the PyTorch backend ({over_fps:.1f} fps processed): latency capture → result p95 | {pct(latency, 95):.0f} ms = ×{figures['overload_latency_p95_over_model_ms_ratio']} one model call ({infer_ms:.0f} ms); {over_acc} accepted = {over_proc} processed + {over_drop} counted drops | ≤ 2× |

Latency stays bounded under overload because the live policy drops (and counts) what the model
cannot take, instead of queueing it.

What got the pipeline here: the leader reads ahead (a prefetch thread picks frames up and
decodes them while the model runs, so the transport time above is not one model call) and the
native OpenVINO detector folds colour conversion and scaling into the model (compare the first
two rows of the backend table). The bare model's speed on this shared VM moves between runs
minutes apart, so the rounds alternate the bare model and the pipeline, each round's ratio is
taken against the mean of the bare runs right before and right after its pipeline run, and the
median of the rounds is recorded with its min and max. MJPEG: each annotated frame is encoded once and its
multipart bytes are shared, so extra viewers cost only their socket writes (the web CPU row).

CPU backends, bare model on pre-decoded frames (the first is the CPU default):

| backend | frames/s | ms per frame |
| --- | --- | --- |
{rows}
"""
    record(figures, "Pipeline", md)
    print(figures)


if __name__ == "__main__":
    main()
