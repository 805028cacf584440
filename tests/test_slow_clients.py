"""No client can starve a service: real ingest and web (gunicorn) behind a real nginx, a real
redis-server, hostile clients on loopback. A sender keeps getting 2xx and /healthz keeps
answering within 1 s while hundreds of slow connections and viewers are open; streams over
their caps get 503 + Retry-After; bad tokens are throttled per client address."""

from __future__ import annotations

import socket
import time

import pytest
import requests
from slowload import (
    MjpegViewers,
    Probe,
    basic_auth_header,
    close_all,
    proxied_services,
    slow_body_connections,
    slow_client_scenario,
)

from support import clip_jpegs, free_port, post_frame, wait_for

#: camera tokens of the test registry (ingest refuses tokens under 20 characters)
TOK1 = "tok1-16charsfortests"

CAMERAS = "cam0:tok0-16charsfortests,cam1:tok1-16charsfortests," + ",".join(
    f"v{i}:vtok{i}-16charsfortests" for i in range(1, 5))


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    return clip_jpegs(n=10)


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def test_slow_clients_cannot_starve_ingest_or_web(redis_server, rdb, tmp_path, jpegs) -> None:
    with proxied_services(redis_server.url, tmp_path, cameras=CAMERAS,
                          camera_fps_limit=100) as stack:
        out = slow_client_scenario(stack, jpegs, seconds=8.0, slow=200, viewers=100)
        # the viewers have gone: web notices at its next write (a preamble CRLF every 2 s
        # while the cameras have no annotated frame) and gives their slots back
        def slots_free() -> bool:
            viewer = MjpegViewers(stack.web, ["/video/v1.mjpg"], 1,
                                  headers=basic_auth_header()).start()
            wait_for(lambda: sum(viewer.statuses.values()) == 1, 10, "a viewer's status")
            viewer.stop()
            return viewer.statuses == {200: 1}

        wait_for(slots_free, 20, "the slots of closed viewers to come back", poll_s=0.5)
        logs = stack.logs()
    assert out["sent"] >= 20, out
    assert out["failed"] == [] and out["sender_success_ratio"] == 1.0, (out, logs)
    for url, probe in out["probes"].items():
        assert probe["bad"] == [] and probe["ok"] >= 10, (url, probe, logs)
    # 100 viewers over 4 cameras: the total cap (32) admits 32, the rest get 503 at once
    assert out["viewer_statuses"] == {200: 32, 503: 68}, out
    assert out["retry_after"] == ["5"]


def test_proxy_bounds_request_bodies_in_size_and_time(redis_server, rdb, tmp_path,
                                                      jpegs) -> None:
    with proxied_services(redis_server.url, tmp_path, cameras=CAMERAS, web=False,
                          client_timeout_s=2, max_frame_bytes=100_000) as stack:
        host, port = stack.ingest.removeprefix("http://").split(":")
        # a body over CCTV_MAX_FRAME_BYTES: refused by nginx before a byte of it is read
        big = requests.post(f"{stack.ingest}/api/v1/cameras/cam1/frames", data=b"\xff" * 200_000,
                            headers={"Content-Type": "image/jpeg",
                                     "Authorization": "Bearer tok1-16charsfortests"}, timeout=10)
        assert big.status_code == 413
        # a stalled body: nginx answers 408 or closes the connection after the body timeout
        assert big.json()["error"] == "too_large"
        (sock,) = slow_body_connections(stack.ingest, "/api/v1/cameras/cam1/frames", 1,
                                        token=TOK1, content_length=50_000)
        sock.settimeout(30)
        started = time.monotonic()
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        waited = time.monotonic() - started
        close_all([sock])
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:100]
        assert waited < 20, f"the stalled body was held {waited:.1f}s with a 2 s timeout"
        # a stalled request line/headers too
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(b"POST /api/v1/cameras/cam1/frames HTTP/1.1\r\nHost: x\r\n")
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:100]
        # and the good frame still goes through
        resp = post_frame(requests.Session(), stack.ingest, "cam1", TOK1, jpegs[0], 1)
        assert resp.status_code == 202, resp.text


def test_stream_caps_and_max_duration(redis_server, rdb, tmp_path, jpegs) -> None:
    with proxied_services(redis_server.url, tmp_path, cameras=CAMERAS, web_max_viewers=6,
                          web_max_viewers_per_camera=4, web_max_sse_clients=3,
                          web_mjpeg_max_s=3) as stack:
        session = requests.Session()
        for cam in ("v1", "v2"):
            n = int(cam[1:])
            token = f"vtok{n}-16charsfortests"
            assert post_frame(session, stack.ingest, cam, token, jpegs[0], 1).status_code \
                == 202
        auth = basic_auth_header()
        one = MjpegViewers(stack.web, ["/video/v1.mjpg"], 5, headers=auth).start()
        wait_for(lambda: sum(one.statuses.values()) == 5, 20, "5 viewers of v1 answered")
        assert one.statuses == {200: 4, 503: 1}, "per-camera cap of 4"
        two = MjpegViewers(stack.web, ["/video/v2.mjpg"], 3, headers=auth).start()
        wait_for(lambda: sum(two.statuses.values()) == 3, 20, "3 viewers of v2 answered")
        assert two.statuses == {200: 2, 503: 1}, "total cap of 6"
        sse = MjpegViewers(stack.web, ["/api/v1/cluster/stream"], 4, headers=auth).start()
        wait_for(lambda: sum(sse.statuses.values()) == 4, 20, "4 event streams answered")
        assert sse.statuses == {200: 3, 503: 1}, "SSE cap of 3"
        metrics = requests.get(f"{stack.web}/metrics", timeout=5).text
        assert _metric(metrics, 'cctv_web_streams_refused_total{cap="per_camera",kind="mjpeg"}') \
            == 1
        assert _metric(metrics, 'cctv_web_streams_refused_total{cap="total",kind="mjpeg"}') == 1
        assert _metric(metrics, 'cctv_web_streams_refused_total{cap="total",kind="sse"}') == 1
        # MJPEG streams end after CCTV_WEB_MJPEG_MAX_S: their slots come back by themselves
        wait_for(lambda: one.done and two.done, 30,
                 "MJPEG streams ended by the maximum duration")
        again = MjpegViewers(stack.web, ["/video/v1.mjpg"], 1, headers=auth).start()
        wait_for(lambda: sum(again.statuses.values()) == 1, 20, "a new viewer answered")
        assert again.statuses == {200: 1}
        for v in (one, two, sse, again):
            v.stop()
        assert requests.get(f"{stack.web}/healthz", timeout=1).status_code == 200


def test_failed_tokens_are_throttled_per_client_address(redis_server, rdb, tmp_path,
                                                        jpegs) -> None:
    with proxied_services(redis_server.url, tmp_path, cameras=CAMERAS, web=False,
                          ingest_workers=1, ingest_auth_fail_limit=5,
                          ingest_auth_fail_window_s=60) as stack:
        s = requests.Session()

        def post(base: str, token: str, seq: int, **headers: str) -> requests.Response:
            return post_frame(s, base, "cam1", token, jpegs[0], seq, **headers)

        # through the proxy: a client's own X-Real-IP is replaced by its real address, so
        # forging one does not spread the failures over many addresses
        codes = [post(stack.ingest, "wrong", i, **{"X-Real-IP": f"10.0.0.{i}"}).status_code
                 for i in range(5)]
        assert codes == [403] * 5
        blocked = post(stack.ingest, "wrong", 9)
        assert blocked.status_code == 429 and blocked.json()["error"] == "too_many_bad_tokens"
        assert 1 <= int(blocked.headers["Retry-After"]) <= 60
        # the address is blocked before its token is looked at (good tokens too)
        assert post(stack.ingest, TOK1, 10).status_code == 429
        # other addresses behind the proxy are not affected (the proxy's X-Real-IP, trusted
        # because the peer is in CCTV_TRUSTED_PROXIES)
        other = {"X-Real-IP": "192.0.2.7"}
        assert post(stack.ingest_direct, "wrong", 11, **other).status_code == 403
        assert post(stack.ingest_direct, TOK1, 12, **other).status_code == 202
        metrics = requests.get(f"{stack.ingest_direct}/metrics", timeout=5).text
        assert _metric(metrics, "cctv_ingest_auth_throttled_total") == 2
        assert _metric(metrics, "cctv_ingest_auth_failed_total") == 6
        assert 'cctv_ingest_requests_total{status="429"} 2.0' in metrics


def test_health_answers_while_every_ingest_thread_is_busy(redis_server, rdb, tmp_path,
                                                          jpegs) -> None:
    """Slow bodies sent straight to gunicorn (no proxy) take its request threads; the health
    listener (CCTV_INGEST_HEALTH_BIND, what the stack's health check probes) answers within
    1 s all the same (through the proxy the threads are never taken: the tests above)."""
    health = free_port()
    with proxied_services(redis_server.url, tmp_path, cameras=CAMERAS, web=False,
                          ingest_health_bind=f"127.0.0.1:{health}") as stack:
        path = "/api/v1/cameras/cam1/frames"
        def listening() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{health}/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        wait_for(listening, 20, "the health listener")
        socks = slow_body_connections(stack.ingest_direct, path, 40, token=None)
        socks += slow_body_connections(stack.ingest_direct, path, 16, token=TOK1)
        probes = [Probe(f"http://127.0.0.1:{health}/healthz").start(),
                  Probe(f"http://127.0.0.1:{health}/readyz").start()]
        time.sleep(4)
        for p in probes:
            p.stop()
        close_all(socks)
        for p in probes:
            assert p.late_or_failed == [] and p.ok >= 5, (p.url, p.late_or_failed)
