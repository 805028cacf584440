"""Redis memory is bounded and checked: maxmemory with noeviction, a worst-case check at start
that names the variables, and 503 + Retry-After (the sender keeps the frame) when Redis is full.
Real redis-server, real ingest behind a real nginx, frames of the maximum size."""

from __future__ import annotations

import pytest
from slowload import memory_scenario, memory_settings

from cctv.core.memory import worst_case
from cctv.settings import load_settings

from support import RedisServer, Service, service_env


@pytest.fixture()
def own_redis():
    """A fresh redis-server for this test alone (its used_memory_peak is this test's)."""
    server = RedisServer().start()
    yield server
    server.stop()


def test_sixteen_cameras_of_max_size_frames_stay_under_maxmemory(own_redis, tmp_path) -> None:
    out = memory_scenario(own_redis, tmp_path, seconds=12, cameras=16,
                          frame_bytes=256 * 1024, fps=4.0, frames_maxlen=10)
    assert out["alive"], out["logs"]
    assert out["accepted"] > 16 * 10, out  # every stream filled to its cap and beyond
    assert out["failed"] == 0, out
    assert out["peak_over_maxmemory"] <= 1.0, out
    # Redis full: every frame gets 503 with Retry-After, and the sender's client keeps it
    assert out["full_replies"] == [(503, "retry", 2.0)] * 16, out["full_replies"]
    assert out["store_full_metric"] == 16
    assert "frame store full" in out["logs"]
    assert out["after_replies"][0] == 202, "room again: frames are accepted again"


def test_services_refuse_to_start_when_the_worst_case_cannot_fit(own_redis, tmp_path) -> None:
    cfg = memory_settings(16, 256 * 1024, 4.0, 10)
    env = {f"CCTV_{k.upper()}": str(v) for k, v in cfg.items()}
    fits = worst_case(load_settings(env)).total
    r = own_redis.client()
    r.config_set("maxmemory", fits)
    r.config_set("maxmemory-policy", "noeviction")
    bigger = {**cfg, "frames_maxlen": 40}
    svc = Service(["ingest"], service_env(own_redis.url, **bigger), tmp_path, "ingest-refused")
    assert svc.proc.wait(60) == 2
    log = svc.log()
    assert "does not fit in Redis maxmemory" in log
    for var in ("CCTV_FRAMES_MAXLEN=40", "CCTV_MAX_FRAME_BYTES=262144", "CCTV_CAMERAS"):
        assert var in log, log
    # an evicting policy would lose accepted frames silently: refused too
    r.config_set("maxmemory-policy", "allkeys-lru")
    svc = Service(["web"], service_env(own_redis.url, **cfg), tmp_path, "web-refused")
    assert svc.proc.wait(60) == 2
    assert "noeviction" in svc.log()
