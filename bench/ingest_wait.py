"""What acknowledging a frame only once a replica has it costs ingest: accepted frames/s with
``CCTV_REDIS_MIN_REPLICAS_ACK=1`` (the ingest script and ``WAIT 1`` in one round trip) over
frames/s without (0), against the same primary with one replica on loopback.

wrk (16 connections over 16 cameras, a 720p JPEG, distinct seqs) against each ingest in turn,
A B A B in several rounds in one run; records the median ratio with its min and max.

    CCTV_SHARED=/work/shared .venv/bin/python bench/ingest_wait.py   (CCTV_BENCH_QUICK=1: short)
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "services"))
sys.path.insert(0, str(ROOT))

from bench.record import record  # noqa: E402

from redis_ha import ReplicatedRedis  # noqa: E402
from support import SHARED, Service, admin_url, free_port, service_env, wait_port  # noqa: E402

QUICK = bool(os.environ.get("CCTV_BENCH_QUICK"))
ROUNDS = 3 if QUICK else 4
DURATION_S = 4 if QUICK else 8
CAMERAS = [(f"c{i}", f"t{i}-bench-token-16chars") for i in range(16)]
WAIT_TIMEOUT_MS = 200

WRK_SCRIPT = """
-- each connection is one camera c<i>; seqs start at args[2] so every run sends new frames
local counter = 0
function setup(thread)
  thread:set("first", counter)
  counter = counter + 8
end
function init(args)
  conn, seq = 0, tonumber(args[2])
  local f = io.open(args[1], "rb"); body = f:read("*a"); f:close()
end
function request()
  local cam = first + (conn % 8)
  conn = conn + 1
  seq = seq + 1
  return wrk.format("POST", "/api/v1/cameras/c" .. cam .. "/frames", {
    ["Content-Type"] = "image/jpeg", ["Authorization"] = "Bearer t" .. cam .. "-bench-token-16chars",
    ["X-Frame-Seq"] = tostring(seq), ["X-Capture-Ts"] = "1"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("NON2XX %d\\n", summary.errors.status))
end
"""


def start_ingest(port: int, replicas: int, redis_port: int, tmp: Path) -> Service:
    """An ingest of the capacity runs (2 workers x 8 threads, no rate limit) as the ingest
    user, waiting for ``replicas`` replicas (0: no WAIT)."""
    env = service_env(admin_url(redis_port), cameras=",".join(f"{c}:{t}" for c, t in CAMERAS),
                      camera_fps_limit=100000, frames_maxlen=200,
                      ingest_bind=f"127.0.0.1:{port}", ingest_workers=2, ingest_threads=8,
                      redis_min_replicas_ack=replicas, redis_wait_timeout_ms=WAIT_TIMEOUT_MS)
    svc = Service(["ingest"], env, tmp, f"ingest-wait{replicas}")
    wait_port(port, 30, svc.proc)
    time.sleep(2)  # both gunicorn workers up
    return svc


def wrk(url: str, body: Path, script: Path, first_seq: int) -> tuple[float, int, int]:
    """(accepted frames/s, non-2xx, requests) of one wrk run."""
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{DURATION_S}s", "-s", str(script), url,
                          "--", str(body), str(first_seq)], capture_output=True, text=True,
                         timeout=DURATION_S + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = int(re.search(r"NON2XX (\d+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return rps * (total - bad) / max(total, 1), bad, total


def main() -> None:
    if not shutil.which("wrk"):
        sys.exit("bench/ingest_wait.py needs wrk (apt-get install wrk)")
    import cv2

    tmp = Path(tempfile.mkdtemp(prefix="cctv-bench-wait-"))
    body, script = tmp / "frame.jpg", tmp / "post.lua"
    body.write_bytes(cv2.imencode(".jpg", cv2.imread(str(SHARED / "media" / "zidane.jpg")),
                                  [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    script.write_text(WRK_SCRIPT)
    ha = ReplicatedRedis(replicas=1, sentinels=0, min_replicas=0)
    ports = {0: free_port(), 1: free_port()}
    services = [start_ingest(ports[n], n, ha.primary.port, tmp) for n in (0, 1)]
    admin = ha.admin()
    fps: dict[int, list[float]] = {0: [], 1: []}
    refused = {0: 0, 1: 0}
    seq = 0
    try:
        for rnd in range(ROUNDS):
            for n in (0, 1):
                admin.flushall()
                admin.execute_command("WAIT", 1, 2000)
                got, bad, total = wrk(f"http://127.0.0.1:{ports[n]}", body, script, seq)
                seq += 10**6
                fps[n].append(got)
                refused[n] += bad
                print(f"round {rnd + 1}: {'WAIT 1' if n else 'plain '} {got:7.1f} frames/s "
                      f"({bad} of {total} not 2xx)", flush=True)
    finally:
        for svc in services:
            svc.stop()
        ha.close()
    ratios = [w / p for p, w in zip(fps[0], fps[1], strict=True)]
    med = statistics.median(ratios)
    figures = {
        "ingest_wait_over_plain_ratio": round(med, 3),
        "ingest_wait_over_plain_ratio_min": round(min(ratios), 3),
        "ingest_wait_over_plain_ratio_max": round(max(ratios), 3),
        "ingest_wait_fps": round(statistics.median(fps[1]), 1),
        "ingest_plain_fps": round(statistics.median(fps[0]), 1),
    }
    print(figures)
    md = f"""`bench/ingest_wait.py`: accepted frames/s of ingest (2 workers × 8 threads) with
`CCTV_REDIS_MIN_REPLICAS_ACK=1` (the ingest script and `WAIT 1 {WAIT_TIMEOUT_MS}` in one round
trip: a frame is acknowledged once a replica has it) over the same ingest without WAIT, against
one primary with one replica on loopback. Load: wrk, 16 connections over 16 cameras, a 720p
JPEG, new seqs every run, {DURATION_S} s per run, plain and WAIT alternated in {ROUNDS} rounds.

| figure | median | min | max |
| --- | --- | --- | --- |
| WAIT 1 / plain (`ingest_wait_over_plain_ratio`) | {med:.2f} | {min(ratios):.2f} | {max(ratios):.2f} |
| plain, frames/s | {statistics.median(fps[0]):.0f} | {min(fps[0]):.0f} | {max(fps[0]):.0f} |
| WAIT 1, frames/s | {statistics.median(fps[1]):.0f} | {min(fps[1]):.0f} | {max(fps[1]):.0f} |

Non-2xx answers: plain {refused[0]}, WAIT 1 {refused[1]} (a WAIT that runs out is a 503).
Load generator, both ingests, primary and replica share this machine's cores.
"""
    record(figures, "Ingest with replica acknowledgement", md)


if __name__ == "__main__":
    main()
