"""Live view benchmark: how long a viewer's MJPEG picture stands still while the inference
leader is killed (kill -9) and the standby takes over.

    .venv/bin/python -m bench.live_view            # 5 rounds (~2 minutes)

Real processes: redis-server, ingest, two inference replicas (OpenVINO), web; one camera at
8 fps. Per round a viewer reads ``/video/cam1.mjpg``; the leader is killed; the figure is the
longest gap between two MJPEG frames from 1 s before the kill to 3 s after the new leader
leads. The killed replica is started again as the standby for the next round.
Records ``viewer_freeze_max_s`` (the worst round; goal <= 1) and ``viewer_freeze_p50_s``.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "web"))

from test_live_view import MjpegWatch, result_lag_s  # noqa: E402

from bench.record import record  # noqa: E402

from support import FrameSender, RedisServer, clip_jpegs, wait_for  # noqa: E402
from web_support import CAMERAS, WebStack  # noqa: E402

ROUNDS = int(os.environ.get("CCTV_BENCH_ROUNDS", "5"))
FPS = 8.0


def main() -> None:
    server = RedisServer().start()
    stack = WebStack(server, Path(tempfile.mkdtemp(prefix="cctv-bench-live-")), replicas=())
    freezes: list[float] = []
    lags: list[float] = []
    try:
        stack.replica("a")
        wait_for(lambda: stack.leader() == "a", 90, "replica a to lead", stack.services)
        stack.replica("b")
        standby = "b"
        tokens = dict(c.split(":") for c in CAMERAS.split(","))
        jpegs = clip_jpegs(n=90, step=3) * 40  # long enough for every round
        stack.senders.append(FrameSender(f"http://127.0.0.1:{stack.ingest_port}", "cam1",
                                         tokens["cam1"], jpegs, FPS).start())
        wait_for(lambda: stack.results("cam1") > 10, 60, "results of cam1", stack.services)
        for n in range(1, ROUNDS + 1):
            wait_for(lambda s=standby: stack.rdb.hget(f"cctv:hb:inference:{s}", "role")
                     == b"standby", 90, f"replica {standby} to stand by", stack.services)
            time.sleep(2)  # the standby warm, the viewer in its stride
            leader = stack.leader()
            watch = MjpegWatch(f"{stack.url}/video/cam1.mjpg")
            watch.thread.start()
            wait_for(lambda w=watch: len(w.arrivals) > 5, 30, "MJPEG frames", stack.services)
            killed_at = time.monotonic()
            stack.replicas[leader].signal(signal.SIGKILL)
            wait_for(lambda lead=leader: stack.leader() not in (None, lead), 30,
                     "the standby to take over", stack.services)
            time.sleep(3)
            freeze = watch.max_gap(killed_at - 1)
            watch.stop.set()
            lag = result_lag_s(stack)
            freezes.append(freeze)
            lags.append(lag)
            print(f"round {n}: leader {leader} killed; viewer freeze {freeze:.2f} s (results "
                  f"trail frames by {lag:.2f} s)", flush=True)
            stack.replicas[leader].stop()
            stack.replica(leader)  # back as the standby
            standby = leader
    finally:
        stack.close()
        server.stop()
    figures = {"viewer_freeze_max_s": round(max(freezes), 3),
               "viewer_freeze_p50_s": round(statistics.median(freezes), 3)}
    print(figures)
    rows = "\n".join(f"| {i} | {f:.2f} | {lag:.2f} |"
                     for i, (f, lag) in enumerate(zip(freezes, lags, strict=True), 1))
    record(figures, "Live view through a take-over", f"""
Command: `.venv/bin/python -m bench.live_view` ({ROUNDS} rounds). One camera at {FPS:g} fps,
two replicas; per round a viewer reads the MJPEG stream while the leader is killed (kill -9).
Freeze: the longest gap between two MJPEG frames the viewer got, from 1 s before the kill to 3 s
after the new leader leads (during the take-over the live view shows the raw frames, "detection
paused", docs/web.md).

| round | viewer freeze (s) | results trail frames by (s) |
| ---: | ---: | ---: |
{rows}

`viewer_freeze_max_s` **{figures['viewer_freeze_max_s']}** (goal ≤ 1), median
{figures['viewer_freeze_p50_s']} s.
""")


if __name__ == "__main__":
    main()
