"""Token rotation benchmark: frames refused or lost while a streaming camera's token is
rotated (``cctv cameras rotate-token``, the new token written to the sender's token file).

    .venv/bin/python -m bench.token_rotation        # 3 rounds (~1 minute)

Real processes: redis-server, ingest, one sender streaming the sample clip at 20 fps with a
token file. Per round: rotate, wait, write the new token into the file, wait until ingest
retired the old token; at the end the sender stops and every frame it captured is looked for
in the camera's stream. Records ``token_rotation_frames_lost`` (frames captured but not in the
stream, all rounds; goal 0), ``token_rotation_frames_refused`` (frames ingest refused; goal 0)
and ``token_rotation_retire_p50_s`` (from writing the new token to the old one retired).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "sender"))

from test_sender_rotation import OLD, write_token  # noqa: E402

from bench.record import record  # noqa: E402
from cctv.core.registry import Registry, token_digest  # noqa: E402

from sender_support import CLIP_480, Ingest, SenderProc, sender_env, stream_seqs  # noqa: E402
from support import RedisServer, free_port, service_env, wait_for  # noqa: E402

ROUNDS = int(os.environ.get("CCTV_BENCH_ROUNDS", "3"))
FPS = 20


def rotate(server: RedisServer) -> str:
    out = subprocess.run([sys.executable, "-m", "cctv", "cameras", "rotate-token", "cam1"],
                         env=service_env(server.url), capture_output=True, text=True, timeout=60,
                         check=True)
    return next(ln.split()[1] for ln in out.stdout.splitlines() if ln.startswith("token:"))


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cctv-bench-rotation-"))
    server = RedisServer().start()
    rdb = server.client()
    ing = Ingest(server.url, free_port(), tmp, camera_fps_limit=100, frames_maxlen=20000).start()
    token_file = tmp / "cam1.token"
    write_token(token_file, OLD)
    s = SenderProc(["--ingest", ing.url, "--camera", "cam1", "--source", str(CLIP_480),
                    "--loop", "--fps", str(FPS), "--token-file", str(token_file)],
                   tmp / "state", tmp, env=sender_env())
    reg = Registry(rdb)
    retire: list[float] = []
    try:
        wait_for(lambda: rdb.xlen("cctv:frames:cam1") >= 40, 30, "frames before the rotation")
        for r in range(ROUNDS):
            new = rotate(server)
            time.sleep(1.0)  # both tokens valid while the sender still uses the old one
            t0 = time.monotonic()
            write_token(token_file, new)
            wait_for(lambda new=new: reg.get("cam1").tokens == (token_digest(new),), 15,
                     "the old token retired")
            retire.append(time.monotonic() - t0)
            print(f"round {r + 1}: old token retired {retire[-1]:.2f} s after the new one was "
                  "written", flush=True)
            time.sleep(1.0)
        assert s.stop() == 0, s.log()
        stats = s.stats()
        seqs = [seq for seq, _ in stream_seqs(rdb, "cam1")]
        captured = stats["captured"]
        # every captured frame is in the stream or counted by the sender as dropped by policy
        # (live queue or spool full) or refused; what is left is lost
        refused = stats["rejected"]
        lost = captured - len(set(seqs)) - stats["dropped"] - stats["evicted"] - refused
    finally:
        if s.proc.poll() is None:
            s.stop()
        ing.stop()
        server.stop()
    figures = {"token_rotation_frames_lost": lost, "token_rotation_frames_refused": refused,
               "token_rotation_retire_p50_s": round(statistics.median(retire), 3)}
    print(figures)
    record(figures, "Token rotation", f"""
`python -m bench.token_rotation`: a sender streams the sample clip at {FPS} fps with a token
file; {ROUNDS} rotations (`cctv cameras rotate-token`, the new token written to the file 1 s
later). {captured} frames captured in all.

| figure | value |
| --- | --- |
| frames lost (`token_rotation_frames_lost`) | {lost} |
| frames refused by ingest (`token_rotation_frames_refused`) | {refused} |
| new token written -> old token retired, median (`token_rotation_retire_p50_s`) | {figures["token_rotation_retire_p50_s"]} s (min {min(retire):.2f}, max {max(retire):.2f}) |
""")


if __name__ == "__main__":
    main()
