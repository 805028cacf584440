"""Bad entries in a results stream against a real events service (real process, real
redis-server): each one is counted (``bad_results`` in ``cctv:events:stats``), acked and
skipped; the service stays up and goes on with the next good result. With
``CCTV_POISON_FIGURES=<folder>`` the module writes its figures to ``results.json`` there."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import redis

from cctv.core import keys
from cctv.core.entries import encode_result

from support import Service, free_port, service_env, wait_for

CAM = "cam1"
CONFIG = {"timezone": "UTC", "cameras": {CAM: {
    "zones": {"all": [[0, 0], [640, 0], [640, 480], [0, 480]]},
    "rules": [{"name": "car_seen", "type": "dwell", "zone": "all", "classes": ["car"],
               "seconds": 1}]}}}


def good_fields(**over: object) -> dict[str, object]:
    now = time.time_ns() // 1000
    flat = encode_result(frame=f"{now // 1000}-0", seq=1, ts=now, rx=now, pick=now, done=now,
                         w=640, h=480, late=False, epoch=1, worker="w", model="m", infer_ms=5.0,
                         dets=[{"cls": 2, "name": "car", "conf": 0.9, "xyxy": [1, 2, 30, 40],
                                "track": 1}])
    fields: dict[str, object] = dict(zip(flat[::2], flat[1::2], strict=True))
    fields.update(over)
    return {k: v for k, v in fields.items() if v is not None}


def det(**over: object) -> bytes:
    d = {"cls": 2, "name": "car", "conf": 0.9, "xyxy": [1, 2, 30, 40], "track": 1, **over}
    return json.dumps([d]).encode()


BAD = {
    "missing_frame": {"frame": None},
    "frame_not_an_id": {"frame": "latest"},
    "missing_dets": {"dets": None},
    "dets_not_json": {"dets": b"{not json"},
    "dets_an_object": {"dets": b'{"cls": 2}'},
    "dets_nested_deep": {"dets": b"[" * 100_000 + b"]" * 100_000},
    "dets_oversized": {"dets": b"[" + b"0," * 600_000 + b"0]"},
    "dets_too_many": {"dets": json.dumps([json.loads(det())[0]] * 1001).encode()},
    "box_of_three": {"dets": det(xyxy=[1, 2, 3])},
    "box_nan": {"dets": b'[{"cls":2,"name":"car","conf":0.9,"xyxy":[NaN,1,2,3]}]'},
    "box_infinite": {"dets": b'[{"cls":2,"name":"car","conf":0.9,"xyxy":[1e999,1,2,3]}]'},
    "box_strings": {"dets": det(xyxy=["1", "2", "3", "4"])},
    "conf_over_one": {"dets": det(conf=5)},
    "cls_negative": {"dets": det(cls=-1)},
    "cls_text": {"dets": det(cls="car")},
    "track_text": {"dets": det(track="seven")},
    "seq_superscript": {"seq": "²".encode()},
    "ts_huge": {"ts": "9" * 50},
    "w_text": {"w": "wide"},
    "infer_ms_inf": {"infer_ms": "inf"},
    "worker_not_text": {"worker": b"\xff\xfe\xfd"},
    "late_two": {"late": "2"},
    "only_one_field": {k: None for k in good_fields() if k != "seq"},
}


@pytest.fixture(scope="module")
def events(redis_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("poison-results")
    (tmp / "events.json").write_text(json.dumps(CONFIG))
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    svc = Service(["events"], service_env(
        redis_server.url, cameras=f"{CAM}:tok1-16charsfortests", events_config=tmp / "events.json",
        events_dir=tmp / "media", events_http_bind=f"127.0.0.1:{free_port()}"), tmp, "events")
    wait_for(lambda: any(g["name"] == keys.EVENTS_GROUP.encode()
                         for g in _groups(r)) or svc.proc.poll() is not None, 60,
             "the events service's consumer group", [svc])
    tally = {"cases": 0, "counted": 0}
    yield svc, r, tally
    out = os.environ.get("CCTV_POISON_FIGURES")
    if out:
        (Path(out) / "results.json").write_text(json.dumps({
            "poison_results_cases": tally["cases"],
            "poison_results_uncounted": tally["cases"] - tally["counted"],
            "poison_events_exits": int(svc.proc.poll() is not None)}, indent=1))
    svc.stop()


def _groups(r: redis.Redis) -> list[dict]:
    try:
        return r.xinfo_groups(keys.detections(CAM))
    except redis.ResponseError:
        return []


def _caught_up(r: redis.Redis, last_id: bytes) -> bool:
    g = next(g for g in _groups(r) if g["name"] == keys.EVENTS_GROUP.encode())
    return g["last-delivered-id"] == last_id and g["pending"] == 0


@pytest.mark.parametrize("name", list(BAD))
def test_bad_result_costs_one_count(events, name: str) -> None:
    svc, r, tally = events
    tally["cases"] += 1
    before = int(r.hget(keys.EVENTS_STATS, f"bad_results:{CAM}") or 0)
    r.xadd(keys.detections(CAM), good_fields(**BAD[name]))
    good = r.xadd(keys.detections(CAM), good_fields())
    wait_for(lambda: _caught_up(r, good) or svc.proc.poll() is not None, 30,
             "the events service to handle both entries", [svc])
    assert svc.proc.poll() is None, svc.log()[-3000:]
    assert int(r.hget(keys.EVENTS_STATS, f"bad_results:{CAM}") or 0) == before + 1
    tally["counted"] += 1
