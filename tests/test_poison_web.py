"""Bad results and frames against a real web process (real redis-server): the camera's feed
thread counts each one it cannot draw (``cctv_web_frames_undrawable_total``), skips it and
keeps serving the next good result; the web process stays up."""

from __future__ import annotations

import re
import time

import pytest
import redis
import requests

from cctv.core import keys
from cctv.core.entries import encode_result

from hostile_inputs import second_sof_before_scan, tiny_huge_jpeg
from support import (
    VIEWER_PASSWORD,
    VIEWER_USER,
    Service,
    clip_jpegs,
    free_port,
    service_env,
    wait_for,
    wait_port,
)

CAM = "cam1"
GOOD = clip_jpegs(n=1)[0]
AUTH = (VIEWER_USER, VIEWER_PASSWORD)


def _frame(r: redis.Redis, jpeg: bytes | None = GOOD) -> str:
    now = time.time_ns() // 1000
    fields = {"ts": now, "seq": 1, "w": 640, "h": 480, "rx": now, "late": 0}
    if jpeg is not None:
        fields["jpeg"] = jpeg
    return r.xadd(keys.frames(CAM), fields).decode()


def _result(r: redis.Redis, frame_id: str, **over: object) -> str:
    flat = encode_result(frame=frame_id, seq=1, ts=1, rx=1, pick=1, done=2, w=640, h=480,
                         late=False, epoch=1, worker="w", model="m", infer_ms=1.0,
                         dets=[{"cls": 2, "name": "car", "conf": 0.9, "xyxy": [10, 10, 90, 90]}])
    fields = dict(zip(flat[::2], flat[1::2], strict=True)) | over
    return r.xadd(keys.detections(CAM), {k: v for k, v in fields.items() if v is not None}
                  ).decode()


CASES = {
    "frame_65500x65500": lambda r: _result(r, _frame(r, tiny_huge_jpeg())),
    "frame_two_sof": lambda r: _result(r, _frame(r, second_sof_before_scan(GOOD))),
    "frame_not_a_jpeg": lambda r: _result(r, _frame(r, b"GIF89a" + bytes(100))),
    "frame_without_jpeg": lambda r: _result(r, _frame(r, None)),
    "frame_oversized": lambda r: _result(r, _frame(r, GOOD + bytes(2_000_000))),
    "result_dets_not_json": lambda r: _result(r, _frame(r), dets="{"),
    "result_box_of_text": lambda r: _result(r, _frame(r), dets='[{"cls":1,"conf":0.5,'
                                                             '"xyxy":["a","b","c","d"]}]'),
    "result_frame_id_junk": lambda r: _result(r, "not-an-id"),
    "result_missing_fields": lambda r: r.xadd(keys.detections(CAM), {"frame": _frame(r)}),
}


@pytest.fixture(scope="module")
def web(redis_server, tmp_path_factory):
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    r.sadd(keys.CAMERAS_ACTIVE, CAM)
    port = free_port()
    svc = Service(["web"], service_env(redis_server.url, web_bind=f"127.0.0.1:{port}",
                                       cameras=f"{CAM}:tok1-16charsfortests",
                                       max_frame_bytes=1_000_000,
                                       viewer_idle_s=600),
                  tmp_path_factory.mktemp("poison-web"), "web")
    wait_port(port, 30, svc.proc)
    url = f"http://127.0.0.1:{port}"
    first = _result(r, _frame(r))
    wait_for(lambda: _shown(url) == first, 30, "the first annotated frame", [svc])
    yield svc, r, url
    svc.stop()


def _shown(url: str) -> str | None:
    resp = requests.get(f"{url}/api/v1/cameras/{CAM}/snapshot.jpg", auth=AUTH, timeout=10)
    return resp.headers.get("X-Result-Id") if resp.status_code == 200 else None


def _undrawable(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    m = re.search(r'^cctv_web_frames_undrawable_total\{camera="cam1"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.parametrize("name", list(CASES))
def test_feed_skips_what_it_cannot_draw(web, name: str) -> None:
    svc, r, url = web
    before = _undrawable(url)
    CASES[name](r)
    wait_for(lambda: _undrawable(url) == before + 1 or svc.proc.poll() is not None, 30,
             "the bad result to be counted", [svc])
    good = _result(r, _frame(r))
    wait_for(lambda: _shown(url) == good or svc.proc.poll() is not None, 30,
             "the next good result on the feed", [svc])
    assert svc.proc.poll() is None, svc.log()[-3000:]
    assert _undrawable(url) == before + 1
