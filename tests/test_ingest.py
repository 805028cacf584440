"""Ingest against a real gunicorn process and a real redis-server: every bad input gets its
status code, and the service keeps accepting good frames afterwards."""

from __future__ import annotations

import re
import socket
import time
from urllib.parse import urlparse

import pytest
import requests

from cctv.core import keys

from support import clip_jpegs, post_frame, wait_for

#: camera tokens of the test registry (ingest refuses tokens under 20 characters)
TOK1 = "tok1-16charsfortests"
SHARED = "shared-secret-0123456"


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    return clip_jpegs(n=20)


@pytest.fixture()
def ingest(start_ingest, rdb):
    url, _svc = start_ingest(max_frame_bytes=1_000_000, camera_fps_limit=1000)
    return url


def _post(url, jpeg, camera="cam1", token=TOK1, seq=1, **headers):
    return post_frame(requests.Session(), url, camera, token, jpeg, seq, **headers)


def test_good_frame_is_accepted_into_the_stream(ingest, rdb, jpegs) -> None:
    resp = _post(ingest, jpegs[0], seq=7)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert (body["width"], body["height"]) == (640, 480)
    entries = rdb.xrange(keys.frames("cam1"))
    assert [e[0].decode() for e in entries] == [body["id"]]
    fields = entries[0][1]
    assert fields[b"seq"] == b"7" and fields[b"jpeg"] == jpegs[0]
    assert fields[b"w"] == b"640" and fields[b"h"] == b"480"
    # the consumer group exists from the first frame, so nothing can slip past it
    groups = rdb.xinfo_groups(keys.frames("cam1"))
    assert groups[0]["name"] == keys.INFER_GROUP.encode()


def test_frames_from_an_unsynchronised_clock_are_accepted_and_counted(ingest, rdb,
                                                                     jpegs) -> None:
    headers = {"Content-Type": "image/jpeg", "Authorization": f"Bearer {TOK1}", "X-Frame-Seq": "3",
               "X-Capture-Ts": "1000", "X-Clock-Unsynced": "1"}
    resp = requests.post(f"{ingest}/api/v1/cameras/cam1/frames", data=jpegs[0],
                         headers=headers, timeout=10)
    assert resp.status_code == 202, resp.text
    metrics = requests.get(f"{ingest}/metrics", timeout=5).text
    assert "cctv_ingest_frames_clock_unsynced_total 1.0" in metrics


def test_repeated_seq_is_accepted_once(ingest, rdb, jpegs) -> None:
    first = _post(ingest, jpegs[0], seq=5)
    again = _post(ingest, jpegs[1], seq=5)
    assert first.status_code == 202
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["id"] == first.json()["id"]
    assert rdb.xlen(keys.frames("cam1")) == 1
    assert rdb.hget(keys.stats("cam1"), "duplicate") == b"1"


@pytest.mark.parametrize("case,status,error", [
    ("missing_seq", 400, "missing_header"),
    ("bad_seq", 400, "bad_header"),
    ("negative_ts", 400, "bad_header"),
    ("bad_late", 400, "bad_header"),
    ("bad_unsynced", 400, "bad_header"),
    ("no_auth", 401, "unauthorized"),
    ("basic_auth", 401, "unauthorized"),
    ("wrong_token", 403, "forbidden"),
    ("other_cameras_token", 403, "forbidden"),
    ("unknown_camera", 403, "forbidden"),
    ("bad_camera_name", 400, "bad_camera"),
    ("too_large", 413, "too_large"),
    ("wrong_type", 415, "unsupported_media_type"),
    ("no_type", 415, "unsupported_media_type"),
    ("truncated_jpeg", 400, "bad_jpeg"),
    ("png_labelled_jpeg", 400, "bad_jpeg"),
    ("empty_body", 400, "empty_body"),
])
def test_bad_input_gets_its_status(ingest, rdb, jpegs, shared_dir, case, status, error) -> None:
    good = jpegs[0]
    headers = {"Content-Type": "image/jpeg", "Authorization": f"Bearer {TOK1}",
               "X-Frame-Seq": "1", "X-Capture-Ts": str(time.time_ns() // 1000)}
    body, camera = good, "cam1"
    if case == "missing_seq":
        del headers["X-Frame-Seq"]
    elif case == "bad_seq":
        headers["X-Frame-Seq"] = "12abc"
    elif case == "negative_ts":
        headers["X-Capture-Ts"] = "-5"
    elif case == "bad_late":
        headers["X-Frame-Late"] = "yes"
    elif case == "bad_unsynced":
        headers["X-Clock-Unsynced"] = "true"
    elif case == "no_auth":
        del headers["Authorization"]
    elif case == "basic_auth":
        headers["Authorization"] = "Basic dXNlcjpwYXNz"
    elif case == "wrong_token":
        headers["Authorization"] = "Bearer nope"
    elif case == "other_cameras_token":
        headers["Authorization"] = "Bearer tok2-16charsfortests"
    elif case == "unknown_camera":
        camera = "cam9"
    elif case == "bad_camera_name":
        camera = "-bad$name"
    elif case == "too_large":
        body = good + b"\x00" * 1_000_001
    elif case == "wrong_type":
        headers["Content-Type"] = "image/png"
    elif case == "no_type":
        del headers["Content-Type"]
    elif case == "truncated_jpeg":
        body = good[: len(good) // 2]
    elif case == "png_labelled_jpeg":
        import cv2
        import numpy as np

        img = cv2.imdecode(np.frombuffer(good, np.uint8), cv2.IMREAD_COLOR)
        body = cv2.imencode(".png", img)[1].tobytes()
    elif case == "empty_body":
        body = b""
    resp = requests.post(f"{ingest}/api/v1/cameras/{camera}/frames", data=body,
                         headers=headers, timeout=10)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == error
    assert resp.json()["message"]
    assert rdb.xlen(keys.frames(camera)) == 0
    # the service still accepts good frames after the bad one
    assert _post(ingest, good, seq=100).status_code == 202
    metrics = requests.get(f"{ingest}/metrics", timeout=5).text
    assert f'cctv_ingest_requests_total{{status="{status}"}} 1.0' in metrics


def test_50mb_body_is_refused_without_reading_it(ingest, jpegs) -> None:
    """Announce 50 MB but send only the headers: the 413 must come without the body."""
    u = urlparse(ingest)
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall((f"POST /api/v1/cameras/cam1/frames HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer tok1-16charsfortests\r\nContent-Type: image/jpeg\r\n"
                   f"X-Frame-Seq: 1\r\nX-Capture-Ts: 1\r\nContent-Length: {50 * 2**20}\r\n\r\n")
                  .encode() + jpegs[0][:1000])
        started = time.monotonic()
        reply = s.recv(4096).decode(errors="replace")
        assert time.monotonic() - started < 3
    assert reply.startswith("HTTP/1.1 413"), reply
    assert _post(ingest, jpegs[0], seq=2).status_code == 202


def test_50mb_chunked_body_is_cut_at_the_limit(ingest, jpegs) -> None:
    """Chunked upload without Content-Length: read at most limit + 1 bytes, then 413."""
    sent = 0

    def chunks():
        nonlocal sent
        block = b"\x00" * 2**20
        for _ in range(50):
            sent += len(block)
            yield block

    try:
        resp = requests.post(f"{ingest}/api/v1/cameras/cam1/frames", data=chunks(),
                             headers={"Content-Type": "image/jpeg",
                                      "Authorization": f"Bearer {TOK1}",
                                      "X-Frame-Seq": "1", "X-Capture-Ts": "1"}, timeout=10)
        assert resp.status_code == 413
    except requests.ConnectionError:
        pass  # the server closed the connection after its 413: also a refusal
    assert sent < 50 * 2**20, "the whole 50 MB body was sent: the server kept reading"
    assert _post(ingest, jpegs[0], seq=3).status_code == 202


@pytest.mark.parametrize("raw,status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"POST /api/v1/cameras/cam1/frames HTTP/1.1\r\nHost: x\r\nX-Bad\x00Header: 1\r\n\r\n",
     400),
    (b"POST /api/v1/cameras/cam1/frames HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 20000
     + b"\r\n\r\n", 431),
    (b"POST /api/v1/cameras/cam1/frames HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
     400),
])
def test_junk_requests_get_4xx(ingest, jpegs, raw: bytes, status: int) -> None:
    u = urlparse(ingest)
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(raw)
        reply = s.recv(4096).decode(errors="replace")
    assert reply.split(" ", 2)[1] == str(status), reply[:200]
    assert _post(ingest, jpegs[0], seq=4).status_code == 202


def test_rate_limit_gives_429(start_ingest, rdb, jpegs) -> None:
    url, _ = start_ingest(camera_fps_limit=2)
    session = requests.Session()
    codes = [post_frame(session, url, "cam1", TOK1, jpegs[0], seq).status_code
             for seq in range(10)]
    assert codes[:2] == [202, 202]
    assert 429 in codes
    limited = session.post(f"{url}/api/v1/cameras/cam1/frames", data=jpegs[0], headers={
        "Content-Type": "image/jpeg", "Authorization": f"Bearer {TOK1}", "X-Frame-Seq": "99",
        "X-Capture-Ts": "1"}, timeout=5)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert int(rdb.hget(keys.stats("cam1"), "rejected_rate")) == codes.count(429) + 1
    # the window moves on: a frame is accepted again within a couple of seconds
    seqs = iter(range(1000, 2000))
    wait_for(lambda: post_frame(session, url, "cam1", TOK1, jpegs[0], next(seqs)).status_code
             == 202, 5, "the rate limit to let frames in again", poll_s=0.2)


def test_unread_frames_evicted_by_the_cap_are_counted(start_ingest, rdb, jpegs) -> None:
    url, _ = start_ingest(frames_maxlen=10)
    session = requests.Session()
    for seq in range(15):
        assert post_frame(session, url, "cam1", TOK1, jpegs[seq], seq).status_code == 202
    assert rdb.xlen(keys.frames("cam1")) == 10
    stats = rdb.hgetall(keys.stats("cam1"))
    assert stats[b"accepted"] == b"15" and stats[b"dropped_evicted"] == b"5"
    seqs = [s for _id, f in rdb.xrange(keys.drops("cam1"))
            for s in f[b"seqs"].decode().split(",")]
    assert seqs == ["0", "1", "2", "3", "4"]


def test_open_registry_uses_the_shared_token(start_ingest, rdb, jpegs) -> None:
    url, _ = start_ingest(cameras_strict="false", ingest_token=SHARED)
    session = requests.Session()
    assert post_frame(session, url, "newcam", SHARED, jpegs[0], 1).status_code == 202
    assert post_frame(session, url, "newcam", "wrong", jpegs[0], 2).status_code == 403
    assert post_frame(session, url, "cam1", SHARED, jpegs[0], 3).status_code == 403


def test_health_endpoints(ingest) -> None:
    assert requests.get(f"{ingest}/healthz", timeout=5).json()["status"] == "ok"
    assert requests.get(f"{ingest}/readyz", timeout=5).status_code == 200
    assert "cctv_ingest_requests_total" in requests.get(f"{ingest}/metrics", timeout=5).text


def _refused(metrics: str, reason: str) -> float:
    prefix = f'cctv_ingest_refused_total{{reason="{reason}"}} '
    return next(float(line[len(prefix):]) for line in metrics.splitlines()
                if line.startswith(prefix))


def test_unknown_camera_and_wrong_token_get_byte_identical_replies(ingest, rdb, jpegs) -> None:
    """No oracle: whether a camera exists cannot be told from ingest's reply; the two
    refusals are counted apart (and logged apart) for the operator."""
    def raw(camera: str, token: str) -> bytes:
        with socket.create_connection((urlparse(ingest).hostname, urlparse(ingest).port),
                                      timeout=5) as s:
            s.sendall((f"POST /api/v1/cameras/{camera}/frames HTTP/1.1\r\nHost: x\r\n"
                       f"Authorization: Bearer {token}\r\nContent-Type: image/jpeg\r\n"
                       f"X-Frame-Seq: 1\r\nX-Capture-Ts: 1\r\nContent-Length: "
                       f"{len(jpegs[0])}\r\nConnection: close\r\n\r\n").encode() + jpegs[0])
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        # the Date header is the only thing that may differ between two replies
        return b"\r\n".join(h for h in head.split(b"\r\n") if not h.startswith(b"Date:")) \
            + b"\r\n\r\n" + body

    unknown = raw("cam9", TOK1)
    wrong = raw("cam1", "x" * len(TOK1))
    assert unknown == wrong, (unknown, wrong)
    body = unknown.split(b"\r\n\r\n")[1]
    assert unknown.startswith(b"HTTP/1.1 403") and b"cam9" not in body and b"cam1" not in body
    metrics = requests.get(f"{ingest}/metrics", timeout=5).text
    assert _refused(metrics, "unknown_camera") == 1 and _refused(metrics, "bad_token") == 1
    assert rdb.xlen(keys.frames("cam9")) == 0 and rdb.xlen(keys.frames("cam1")) == 0


def test_short_camera_tokens_are_refused_at_start(tmp_path) -> None:
    import subprocess
    import sys

    from support import service_env

    short = "0123456789abc"
    env = service_env("redis://127.0.0.1:1/0", cameras=f"gate:{TOK1},porch:{short}")
    out = subprocess.run([sys.executable, "-m", "cctv", "ingest"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "porch" in out.stderr and "cctv token" in out.stderr
    assert short not in out.stderr + out.stdout and "gate" not in out.stderr
    made = subprocess.run([sys.executable, "-m", "cctv", "token", "--count", "2"], env=env,
                          capture_output=True, text=True, timeout=60)
    tokens = made.stdout.split()
    assert made.returncode == 0 and len(tokens) == 2 and tokens[0] != tokens[1]
    assert all(len(t) >= 40 and re.fullmatch(r"[A-Za-z0-9_-]+", t) for t in tokens)
