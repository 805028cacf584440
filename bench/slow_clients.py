"""Slow clients and the Redis memory bound: real ingest and web (gunicorn) with and without the
real nginx in front, a real redis-server, hostile clients on loopback.

    CCTV_SHARED=../shared .venv/bin/python -m bench.slow_clients     # ~4 minutes on 2 cores

1. Slow clients, A/B in alternating rounds: 200 slow-body connections to ingest (100 with a
   valid token, 100 with none) and 100 MJPEG viewers on web, held while a sender posts frames at
   5 fps and /healthz of ingest and web is probed every 0.2 s with a 1 s bound. A = clients talk
   to gunicorn directly (the services without the proxy); B = through nginx (as deployed).
2. Memory: 16 cameras post max-size frames (256 KiB, CCTV_MAX_FRAME_BYTES) at their rate limit
   (4 fps) for 60 s into a Redis whose maxmemory is the configuration's computed worst case
   (noeviction); peak used memory over maxmemory, then Redis made full: the replies.

Records ``slow_client_sender_success_ratio`` (through the proxy; goal 1.0),
``slow_client_direct_sender_success_ratio`` (without it), ``slow_client_health_late_ratio``
and ``redis_peak_over_maxmemory_ratio`` (goal <= 1.0) in bench/results.json and the section
"Slow clients and the Redis memory bound" of docs/benchmarks.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "services"))
sys.path.insert(0, str(ROOT / "pi"))

from slowload import Proxied, memory_scenario, proxied_services, slow_client_scenario  # noqa: E402

from bench.record import record  # noqa: E402

from support import RedisServer, clip_jpegs  # noqa: E402

QUICK = os.environ.get("CCTV_BENCH_QUICK") == "1"
ROUND_S = 8.0 if QUICK else 20.0
ROUNDS = 1 if QUICK else 2
MEMORY_S = 15.0 if QUICK else 60.0
CAMERAS = "cam0:tok0-16charsfortests,cam1:tok1-16charsfortests," + ",".join(f"v{i}:vtok{i}-16charsfortests" for i in range(1, 5))


def _health(out: dict, service: str = "ingest") -> tuple[int, int, float]:
    """Probes of ``service``'s /healthz (through the proxy, or direct in round A) within 1 s,
    late or failed, and the slowest."""
    probes = [p for name, p in out["probes"].items() if name.startswith(service)]
    ok = sum(p["ok"] for p in probes)
    bad = sum(p["late"] for p in probes)
    return ok, bad, max(p["worst_s"] for p in probes)


def slow_rounds(redis_url: str, log_dir: Path, jpegs: list[bytes]) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {"direct": [], "proxy": []}
    # the token-less slow bodies that reach gunicorn directly (round A) end as 401s when they
    # are closed; the failed-token throttle would then refuse the next round's setup
    with proxied_services(redis_url, log_dir, cameras=CAMERAS, camera_fps_limit=100,
                          ingest_auth_fail_limit=100000) as stack:
        direct = Proxied(stack.ingest_direct, stack.web_direct, stack.ingest_direct,
                         stack.web_direct)
        for n in range(ROUNDS):
            for mode, target in (("direct", direct), ("proxy", stack)):
                out = slow_client_scenario(target, jpegs, seconds=ROUND_S)
                ok, bad, worst = _health(out)
                wok, wbad, _ = _health(out, "web")
                print(f"round {n + 1} {mode}: sender {out['accepted']}/{out['sent']} 2xx, "
                      f"ingest /healthz {ok} within 1 s, {bad} late/failed (worst "
                      f"{worst:.2f} s), web /healthz {wok} ok {wbad} late, viewers "
                      f"{out['viewer_statuses']}", flush=True)
                results[mode].append(out)
                time.sleep(3)  # let the slow connections of the round be closed everywhere
    return results


def _ratio_line(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def main() -> int:
    jpegs = clip_jpegs(n=10)
    log_dir = Path(tempfile.mkdtemp(prefix="cctv-bench-slow-"))
    redis = RedisServer().start()
    try:
        rounds = slow_rounds(redis.url, log_dir, jpegs)
    finally:
        redis.stop()
    redis = RedisServer().start()
    try:
        mem = memory_scenario(redis, log_dir, seconds=MEMORY_S, cameras=16,
                              frame_bytes=256 * 1024, fps=4.0, frames_maxlen=10)
    finally:
        redis.stop()
    print(f"memory: peak {mem['peak'] / 2**20:.1f} MiB of maxmemory {mem['maxmemory'] / 2**20:.1f}"
          f" MiB ({mem['peak_over_maxmemory']:.3f}); replies {mem['statuses']}; when full: "
          f"{sorted(set(mem['full_replies']))}; after: {mem['after_replies']}", flush=True)

    proxy = [r["sender_success_ratio"] for r in rounds["proxy"]]
    direct = [r["sender_success_ratio"] for r in rounds["direct"]]

    def late(rs: list[dict]) -> list[float]:
        out = []
        for r in rs:
            ok, bad, _ = _health(r)
            out.append(bad / max(1, ok + bad))
        return out

    figures = {
        "slow_client_sender_success_ratio": round(statistics.median(proxy), 4),
        "slow_client_sender_success_ratio_min": round(min(proxy), 4),
        "slow_client_direct_sender_success_ratio": round(statistics.median(direct), 4),
        "slow_client_health_late_ratio": round(statistics.median(late(rounds["proxy"])), 4),
        "slow_client_direct_health_late_ratio": round(statistics.median(late(rounds["direct"])),
                                                      4),
        "redis_peak_over_maxmemory_ratio": round(mem["peak_over_maxmemory"], 4),
        "redis_full_replies_503_ratio": round(
            sum(1 for r in mem["full_replies"] if r[0] == 503) / len(mem["full_replies"]), 4),
    }
    md = f"""Command: `CCTV_SHARED=../shared .venv/bin/python -m bench.slow_clients`
{"(quick mode) " if QUICK else ""}Real ingest (2 workers x 8 threads) and web (64 threads)
gunicorn processes, a real nginx, a real redis-server, all on loopback.

**Slow clients** ({ROUNDS} rounds of A/B, {ROUND_S:.0f} s each): 200 slow-body connections to
ingest (100 with a valid token, 100 without), 100 MJPEG viewers on web, a sender posting at
5 fps, /healthz of ingest and web probed every 0.2 s with a 1 s bound.

| | sender 2xx ratio | ingest /healthz probes late (> 1 s) or failed |
| --- | --- | --- |
| A: clients reach gunicorn directly | {_ratio_line(direct)} | {_ratio_line(late(rounds["direct"]))} |
| B: through nginx (as deployed) | **{_ratio_line(proxy)}** | {_ratio_line(late(rounds["proxy"]))} |

Viewers over the caps got 503 + Retry-After at once: {rounds["proxy"][-1]["viewer_statuses"]}
(total cap CCTV_WEB_MAX_VIEWERS=32).

**Memory** ({MEMORY_S:.0f} s): 16 cameras posting 256 KiB frames (= CCTV_MAX_FRAME_BYTES) at
their rate limit of 4 fps, CCTV_FRAMES_MAXLEN=10, Redis maxmemory = the computed worst case
({mem['maxmemory'] / 2**20:.0f} MiB, noeviction): peak used memory
{mem['peak'] / 2**20:.1f} MiB, **{mem['peak_over_maxmemory']:.3f} of maxmemory**; replies
{mem['statuses']} (429: the token bucket). With Redis then made full, every frame got
{sorted(set(mem['full_replies']))} (status, the sender client's outcome, Retry-After) and after
room was made, {mem['after_replies'][0]}. The worst case is an upper bound (drop records and
events are counted at their caps), hence the low ratio.
"""
    record(figures, "Slow clients and the Redis memory bound", md)
    print(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
