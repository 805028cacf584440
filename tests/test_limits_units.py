"""Units of the bounds: the failed-token throttle, the client address behind the proxy, the
stream slots, the memory worst case and the settings that guard them."""

from __future__ import annotations

import pytest

from cctv.core.clientaddr import client_address
from cctv.core.memory import ENTRY_OVERHEAD_B, MIB, worst_case
from cctv.core.settings import trusted_networks
from cctv.core.throttle import FailureThrottle
from cctv.settings import SettingsError, load_settings


def test_throttle_blocks_after_the_limit_until_the_window_has_room() -> None:
    t = FailureThrottle(limit=3, window_s=10)
    for now in (0.0, 1.0, 2.0):
        assert t.blocked_for("a", now) == 0
        t.failed("a", now)
    assert t.blocked_for("a", 2.5) == pytest.approx(7.5)  # until the first failure is 10 s old
    assert t.blocked_for("b", 2.5) == 0, "per key"
    assert t.blocked_for("a", 10.0) == 0, "the oldest failure left the window"
    t.failed("a", 10.0)
    assert t.blocked_for("a", 10.5) == pytest.approx(0.5)


def test_throttle_memory_is_bounded() -> None:
    t = FailureThrottle(limit=1, window_s=60, max_keys=100)
    for i in range(1000):
        t.failed(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(t._fails) == 100
    assert t.blocked_for("10.0.3.231", 1.0) > 0, "the most recent are kept"
    assert t.blocked_for("10.0.0.0", 1.0) == 0, "the oldest are forgotten first"


def test_client_address_trusts_x_real_ip_only_from_trusted_proxies() -> None:
    trusted = trusted_networks("127.0.0.1/32,10.0.0.0/8")
    assert client_address("127.0.0.1", "192.0.2.1", trusted) == "192.0.2.1"
    assert client_address("10.210.3.4", "192.0.2.1", trusted) == "192.0.2.1"
    assert client_address("192.0.2.9", "10.0.0.1", trusted) == "192.0.2.9", "not a proxy"
    assert client_address("127.0.0.1", "not-an-ip", trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", None, trusted) == "127.0.0.1"
    assert client_address(None, "192.0.2.1", trusted) == "-"
    with pytest.raises(SettingsError, match="CCTV_TRUSTED_PROXIES"):
        load_settings({"CCTV_TRUSTED_PROXIES": "10.0.0.0/33"})


def test_stream_slots_total_and_per_camera() -> None:
    from cctv.web.limits import Slots

    s = Slots("mjpeg", total=3, per_key=2)
    assert s.acquire("a") is None and s.acquire("a") is None
    assert s.acquire("a") == "per_camera"
    assert s.acquire("b") is None
    assert s.acquire("c") == "total"
    s.release("a")
    assert s.acquire("c") is None and s.open == 3

    def stream():
        yield b"x"
        yield b"y"

    s2 = Slots("sse", total=1)
    assert s2.acquire() is None
    gen = s2.held(stream())
    assert next(gen) == b"x"
    gen.close()  # the client went away
    assert s2.open == 0 and s2.acquire() is None


def test_stream_caps_must_leave_threads_free() -> None:
    with pytest.raises(SettingsError, match="CCTV_WEB_THREADS"):
        load_settings({"CCTV_WEB_MAX_VIEWERS": "40", "CCTV_WEB_MAX_SSE_CLIENTS": "24"})
    load_settings({"CCTV_WEB_MAX_VIEWERS": "40", "CCTV_WEB_MAX_SSE_CLIENTS": "23"})


def test_worst_case_counts_the_registry_or_max_cameras() -> None:
    env = {"CCTV_CAMERAS": "a:1,b:2", "CCTV_FRAMES_MAXLEN": "100",
           "CCTV_MAX_FRAME_BYTES": str(MIB)}
    strict = worst_case(load_settings(env))
    assert strict.cameras == 2 and strict.frames == 2 * 100 * (MIB + ENTRY_OVERHEAD_B)
    loose = worst_case(load_settings({**env, "CCTV_CAMERAS_STRICT": "false",
                                      "CCTV_MAX_CAMERAS": "5"}))
    assert loose.cameras == 5
    text = strict.explain(load_settings(env))
    for name in ("CCTV_CAMERAS", "CCTV_FRAMES_MAXLEN=100", f"CCTV_MAX_FRAME_BYTES={MIB}",
                 "CCTV_DET_MAXLEN", "CCTV_EVENTS_MAXLEN"):
        assert name in text
    assert strict.total > strict.frames


def test_default_frame_limit_is_2_mib() -> None:
    assert load_settings({}).max_frame_bytes == 2 * 1024 * 1024
