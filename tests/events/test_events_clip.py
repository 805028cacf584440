"""Events end to end on the sample clip with real processes: ingest, inference (OpenVINO +
ByteTrack), the events service (restarted half-way), four real webhook receivers.

One run of the pipeline (module fixture) and several checks on it: line crossings counted with
stable track ids, a zone rule with snapshots on disk, a verifier that rejects everything, signed
webhook batches (delivered, retried while a receiver is down, dead-lettered, captions only),
the viewer pages and API, and nothing emitted twice across the restart.
"""

from __future__ import annotations

import base64
import json
import signal
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from events_support import WebhookReceiver, group_caught_up, track_report, wait_for
from flask import Flask
from markupsafe import escape as html_escape

from cctv.core import keys
from cctv.events.delivery import verify_signature
from cctv.events.storage import EventStore
from cctv.settings import load_settings

from support import (
    MODEL_OPENVINO,
    MODEL_PT,
    FrameSender,
    Service,
    check_api_reply,
    clip_jpegs,
    free_port,
    service_env,
    until,
    wait_port,
)

#: camera tokens of the test registry (ingest refuses tokens under 20 characters)
TOK1 = "tok1-16charsfortests"

SECRET = "test-webhook-secret-0123456789"
CAM = "cam1"
# the clip at its real speed: every 2nd frame at 15 fps (frames FIRST .. FIRST + 2 * COUNT)
FIRST, COUNT, FPS = 0, 240, 15.0
LINE = {"points": [[320, 75], [320, 240]], "anchor": "center"}
PARKING = [[380, 0], [640, 0], [640, 80], [380, 80]]
CROSSING_CLASSES = ["car", "truck", "bus"]


class ClipRun:
    """What the module fixture leaves for the tests to check."""

    def __init__(self, rdb, tmp: Path, receivers: dict[str, WebhookReceiver],
                 logs: dict[str, str], events_env: dict[str, str]) -> None:
        self.rdb, self.tmp, self.receivers, self.logs = rdb, tmp, receivers, logs
        self.events_env = events_env
        self.store = EventStore(rdb, tmp / "events")

    def stream(self) -> list[dict]:
        return [{k.decode(): v.decode() for k, v in f.items()} | {"entry": i.decode()}
                for i, f in self.rdb.xrange(keys.EVENTS)]

    def events(self, rule: str) -> list[dict]:
        return self.store.query(rule=rule, limit=200)

    def stats(self) -> dict[str, int]:
        return self.store.stats()


def _config(receivers: dict[str, WebhookReceiver]) -> dict:
    r = receivers
    return {
        "timezone": "UTC", "track_timeout_s": 2.0,
        "cameras": {CAM: {
            "zones": {"parking": PARKING},
            "lines": {"middle": LINE},
            "rules": [
                {"name": "cars_crossing", "type": "line", "line": "middle",
                 "classes": CROSSING_CLASSES},
                {"name": "parked", "type": "dwell", "zone": "parking", "classes": ["car"],
                 "seconds": 2},
                # a verifier that can never confirm: a toothbrush with 99 % on a car's crop
                {"name": "verified_cars", "type": "line", "line": "middle",
                 "classes": CROSSING_CLASSES,
                 "verify": {"model": str(MODEL_PT), "classes": ["toothbrush"],
                            "threshold": 0.99, "imgsz": 224}},
            ]}},
        # the receivers listen on loopback, which webhooks may reach only when allowed
        "webhooks": [
            {"name": "good", "allow_private": True, "url": r["good"].url, "batch_s": 2,
             "images": ["crop", "snapshot"]},
            {"name": "flaky", "allow_private": True, "url": r["flaky"].url, "batch_s": 1,
             "max_attempts": 100,
             "backoff_s": 0.3, "backoff_max_s": 1.5},
            {"name": "broken", "allow_private": True, "url": r["broken"].url, "batch_s": 1,
             "max_attempts": 2,
             "backoff_s": 0.2, "backoff_max_s": 0.4},
            {"name": "captions", "allow_private": True, "url": r["captions"].url,
             "batch_s": 1,
             "captions_only": True},
        ],
    }


@pytest.fixture(scope="module")
def run(redis_server, tmp_path_factory) -> ClipRun:
    tmp = tmp_path_factory.mktemp("events-clip")
    rdb = redis_server.client()
    rdb.flushall()
    receivers = {"good": WebhookReceiver().start(), "flaky": WebhookReceiver(),
                 "broken": WebhookReceiver(status=500).start(),
                 "captions": WebhookReceiver().start()}
    (tmp / "events.json").write_text(json.dumps(_config(receivers)))
    jpegs = clip_jpegs(n=FIRST // 2 + COUNT, step=2)[FIRST // 2:]
    ingest_port = free_port()
    common = {"cameras": f"{CAM}:tok1-16charsfortests"}
    ingest = Service(["ingest"], service_env(redis_server.url, ingest_bind=f"127.0.0.1:"
                                             f"{ingest_port}", ingest_workers=1, **common),
                     tmp, "ingest")
    infer = Service(["inference", "--id", "w1"], service_env(
        redis_server.url, model=MODEL_OPENVINO, tracker="bytetrack",
        inference_http_bind=f"127.0.0.1:{free_port()}", **common), tmp, "inference")
    events_env = service_env(redis_server.url, events_config=tmp / "events.json",
                             events_dir=tmp / "events", webhook_secret=SECRET,
                             events_http_bind=f"127.0.0.1:{free_port()}", **common)
    events = Service(["events"], events_env, tmp, "events-1")
    services = [ingest, infer, events]
    logs: dict[str, str] = {}
    try:
        wait_port(ingest_port, 30, ingest.proc)
        wait_for(lambda: rdb.get(keys.LEASE_INFERENCE) is not None, 120, "the inference leader",
                 [infer])
        wait_for(lambda: "events service" in events.log() or events.proc.poll() is not None,
                 120, "the events service", [events])
        assert events.proc.poll() is None, events.log()
        sender = FrameSender(f"http://127.0.0.1:{ingest_port}", CAM, TOK1, jpegs, FPS).start()
        started = time.monotonic()
        restarted = False
        while len(sender.accepted) + len(sender.failed) < len(jpegs):
            elapsed = time.monotonic() - started
            if elapsed > 5 and receivers["flaky"].server is None:
                receivers["flaky"].start()  # down for the first 5 s: retried, delivered later
            if elapsed > COUNT / FPS / 2 and not restarted:
                events.signal(signal.SIGTERM)  # restart half-way: nothing lost, nothing twice
                assert events.proc.wait(20) == 0, events.log()
                logs["events-1"] = events.log()
                events = Service(["events"], events_env, tmp, "events-2")
                services.append(events)
                restarted = True
            time.sleep(0.1)
        sender.stop()
        assert not sender.failed
        wait_for(lambda: group_caught_up(rdb, keys.detections(CAM), keys.EVENTS_GROUP), 60,
                 "the events service to catch up", [events])
        # the track timeout passes: open events end
        wait_for(lambda: not [e for e in EventStore(rdb, tmp).query(limit=200)
                              if e["status"] == "open"], 30, "open events to end", [events])
        # ... and once their margin has passed, their clips are kept as MP4
        wait_for(lambda: rdb.zcard(keys.EVENTS_CLIPS) == 0, 90, "the event clips", [events])

        def delivered() -> bool:
            n = rdb.xlen(keys.EVENTS)
            st = {k.decode(): int(v) for k, v in rdb.hgetall(keys.EVENTS_STATS).items()}
            return n > 0 and all(st.get(k, 0) == n for k in (
                "delivered:good", "delivered:flaky", "delivered:captions", "deadletter:broken"))

        wait_for(delivered, 60, "every receiver to be served", [events])
        for svc in services:
            logs[svc.name] = svc.log()
        yield ClipRun(rdb, tmp, receivers, logs, events_env)
    finally:
        for svc in reversed(services):
            svc.stop()
        for r in receivers.values():
            r.stop()


def test_cars_crossing_the_line_are_counted_with_stable_ids(run: ClipRun, artifacts_dir) -> None:
    crossings = run.events("cars_crossing")
    report = track_report(run.rdb, CAM)
    counts = {k.decode(): int(v) for k, v in run.rdb.hgetall(keys.line_counts(CAM)).items()}
    report.update(crossings=len(crossings), line_counts=counts,
                  crossing_tracks=sorted(e["track"] for e in crossings))
    (artifacts_dir / "tracking.json").write_text(json.dumps(report, indent=1))
    print("tracking on the clip:", json.dumps(report))
    assert len(crossings) >= 3, report
    assert all(e["track"] is not None and e["status"] == "closed" for e in crossings)
    per_dir = Counter((e["track"], e["direction"]) for e in crossings)
    assert max(per_dir.values()) == 1, f"a track was counted twice in one direction: {per_dir}"
    assert sum(v for k, v in counts.items() if k.startswith("cars_crossing:")) == len(crossings)
    assert report["tracked"] > 0.7 * report["detections"], report
    assert report["id_switch_rate"] <= 0.25, report
    for e in crossings:
        assert e["direction"] in ("left", "right")
        assert f"crossed line 'middle' heading {e['direction']}" in e["caption"]


def test_zone_rule_fires_with_snapshots_on_disk(run: ClipRun) -> None:
    parked = run.events("parked")
    assert parked, "no car was in the parking zone for 2 s"
    for e in parked:
        assert e["status"] == "closed" and e["reason"] in ("lost", "left"), e
        assert e["end_ms"] - e["start_ms"] >= 2000
        assert "entered zone 'parking'" in e["caption"] and "stayed" in e["caption"]
        snap = cv2.imread(str(run.store.resolve(e["snapshot"])))
        crop = cv2.imread(str(run.store.resolve(e["crop"])))
        assert snap is not None and snap.shape == (480, 640, 3)
        x1, y1, x2, y2 = e["box"]
        assert crop is not None and crop.shape[0] >= (y2 - y1) and crop.shape[1] >= (x2 - x1)
        assert e["snapshot"].startswith(f"{CAM}/") and e["track"] is not None
    # captions are searchable; filters combine
    found = run.store.query(text="parking stayed", camera=CAM, limit=200)
    assert {e["id"] for e in found} == {e["id"] for e in parked}
    assert not run.store.query(text="parking", zone="nowhere")


def test_a_verifier_that_rejects_everything_emits_nothing(run: ClipRun) -> None:
    stats = run.stats()
    assert not run.events("verified_cars")
    assert not [e for e in run.stream() if e["rule"] == "verified_cars"]
    assert stats.get(f"unconfirmed:{CAM}:verified_cars", 0) >= len(run.events("cars_crossing"))
    assert stats.get("unconfirmed", 0) == stats[f"unconfirmed:{CAM}:verified_cars"]
    assert "not confirmed by its verifier (rejected" in "".join(run.logs.values())


def test_webhooks_get_signed_batches_retries_and_dead_letters(run: ClipRun) -> None:
    stream = run.stream()
    expected = Counter((e["type"], e["id"]) for e in stream)
    good = run.receivers["good"]
    for headers, body in good.requests:
        assert verify_signature(SECRET, headers["x-cctv-timestamp"], body,
                                headers["x-cctv-signature"])
        assert not verify_signature("wrong", headers["x-cctv-timestamp"], body,
                                    headers["x-cctv-signature"])
    got = Counter((e["type"], e["id"]) for e in good.events())
    assert got == expected
    assert len(good.requests) < len(stream), "events go out in batches"
    with_crop = [e for e in good.events() if e.get("crop_jpeg_b64")]
    assert with_crop and "snapshot_jpeg_b64" in with_crop[0]
    img = cv2.imdecode(np.frombuffer(base64.b64decode(with_crop[0]["crop_jpeg_b64"]),
                                     np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    # the flaky receiver was down for 5 s: retried with backoff, everything delivered later
    stats = run.stats()
    assert stats.get("failed:flaky", 0) >= 1
    assert Counter((e["type"], e["id"]) for e in run.receivers["flaky"].events()) == expected
    # the broken one answers 500: two attempts per batch, then dead-lettered and counted
    assert stats.get("deadletter:broken", 0) == len(stream)

    # (the dead-letter stream also records other failures, e.g. a snapshot whose frame is gone)
    def broken_letters() -> int:
        return sum(f.get(b"receiver") == b"broken"
                   for _id, f in run.rdb.xrange(keys.EVENTS_DEADLETTER))

    # every dead-lettered batch was tried twice first; at most one batch of later events may
    # be between its attempts now
    letters, tries = broken_letters(), len(run.receivers["broken"].requests)
    assert letters >= 1 and 2 * letters <= tries <= 2 * (letters + 1), (letters, tries)
    # captions only: no images, boxes or tracks leave
    for e in run.receivers["captions"].events():
        assert set(e) == {"type", "id", "camera", "rule", "status", "start", "end", "caption"}
        assert e["caption"]


def test_nothing_emitted_twice_across_the_restart(run: ClipRun) -> None:
    stream = run.stream()
    dup = [k for k, n in Counter((e["type"], e["id"]) for e in stream).items() if n > 1]
    assert not dup, dup
    starts = {e["id"] for e in stream if e["type"] == "event.start"}
    ends = {e["id"] for e in stream if e["type"] == "event.end"}
    assert ends <= starts
    assert "open events" in run.logs["events-2"]
    stored = run.rdb.zcard(keys.EVENTS_INDEX)
    assert stored == len({e["id"] for e in stream})


def test_events_viewer_and_api(run: ClipRun) -> None:
    from cctv.web.events import create_blueprint

    settings = load_settings({"CCTV_EVENTS_DIR": str(run.tmp / "events")})
    app = Flask("test", template_folder=str(Path(__file__).parent / "templates"))
    app.register_blueprint(create_blueprint(run.rdb, settings))
    c = app.test_client()
    page = c.get("/events")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "crossed line" in html and "/crop.jpg" in html and 'href="/events"' in html
    data = c.get(f"/api/v1/events?camera={CAM}&rule=parked&limit=5").get_json()
    assert data["events"] and all(e["rule"] == "parked" for e in data["events"])
    check_api_reply(data, "/api/v1/events")  # the OpenAPI file describes real events
    ev = data["events"][0]
    assert c.get(ev["crop_url"]).mimetype == "image/jpeg"
    snap = c.get(ev["snapshot_url"])
    assert cv2.imdecode(np.frombuffer(snap.data, np.uint8), cv2.IMREAD_COLOR) is not None
    detail = c.get(f"/events/{ev['id']}")
    assert detail.status_code == 200
    assert str(html_escape(ev["caption"])) in detail.get_data(as_text=True)
    one = c.get(f"/api/v1/events/{ev['id']}").get_json()
    assert one["id"] == ev["id"]
    check_api_reply(one, "/api/v1/events/{event_id}")
    # frames are still in the stream: the clip plays them, annotated
    clip = c.get(f"/events/{ev['id']}/clip.mjpg?speed=0")
    assert clip.status_code == 200
    assert clip.get_data().count(b"Content-Type: image/jpeg") >= 5
    q = c.get("/api/v1/events?q=crossed+heading&class=car").get_json()
    assert q["events"] and all("crossed" in e["caption"] for e in q["events"])
    check_api_reply(q, "/api/v1/events")
    # bad input: 4xx JSON in the web API's error format
    for path, status, code in [("/api/v1/events?since=yesterday", 400, "bad_parameter"),
                               ("/api/v1/events?until=9999-99-99", 400, "bad_parameter"),
                               ("/api/v1/events?limit=100000", 400, "bad_parameter"),
                               ("/api/v1/events?limit=%C2%B2", 400, "bad_parameter"),
                               ("/api/v1/events?camera=../etc", 400, "bad_parameter"),
                               ("/api/v1/events/no%20such", 400, "bad_event_id"),
                               ("/api/v1/events/gate-x-1-2", 404, "unknown_event")]:
        r = c.get(path)
        assert r.status_code == status and r.get_json()["error"] == code, (path, r.data)
        check_api_reply(r.get_json(), "/api/v1/events/{event_id}", str(status))
    assert c.get("/events/does-not-exist").status_code == 404
    assert c.get("/events/..%2F..%2Fetc/snapshot.jpg").status_code == 404
    stats = c.get("/api/v1/events/stats").get_json()
    assert stats["counters"]["emitted"] >= 1 and stats["line_counts"][CAM]
    check_api_reply(stats, "/api/v1/events/stats")


def test_every_event_keeps_its_clip_as_mp4(run: ClipRun) -> None:
    import av

    events = run.store.query(limit=200)
    assert events
    assert not run.stats().get("failed:clip"), run.stats()
    for ev in events:
        path = run.store.resolve(ev["clip"])
        assert path is not None and path.suffix == ".mp4", ev
        with av.open(str(path)) as box:
            video = box.streams.video[0]
            assert video.codec_context.name == "h264"
            frames = list(box.decode(video))
            seconds = float(box.duration or 0) / av.time_base
        # the margin (2 s) on each side of the event (the last events' post-margin may be cut
        # short where the camera stopped sending) ...
        assert seconds >= 3.0, (ev["id"], seconds)
        # ... with every frame the camera sent in that time (15 fps), none skipped
        assert len(frames) >= 0.8 * FPS * seconds, (ev["id"], len(frames), seconds)
        assert (frames[0].width, frames[0].height) == (ev["width"], ev["height"])




def test_event_clip_plays_in_chromium(run: ClipRun, browser, artifacts_dir: Path) -> None:
    import requests

    from support import VIEWER_PASSWORD, VIEWER_USER, viewer_account

    ev = next(e for e in run.store.query(limit=200) if e["clip"])
    port = free_port()
    env = dict(run.events_env, CCTV_WEB_BIND=f"127.0.0.1:{port}",
               CCTV_VIEWERS=viewer_account())
    web = Service(["web"], env, run.tmp, "web-clip")
    try:
        wait_port(port, 30, web.proc)
        base = f"http://127.0.0.1:{port}"
        s = requests.Session()
        s.auth = (VIEWER_USER, VIEWER_PASSWORD)
        api = s.get(f"{base}/api/v1/events/{ev['id']}", timeout=10).json()
        assert api["clip_mp4_url"] == f"/events/{ev['id']}/clip.mp4"
        part = s.get(base + api["clip_mp4_url"], headers={"Range": "bytes=0-99"}, timeout=10)
        assert part.status_code == 206 and len(part.content) == 100  # a browser can seek
        assert part.headers["Content-Type"] == "video/mp4"
        anonymous = requests.get(base + api["clip_mp4_url"], timeout=10, allow_redirects=False)
        assert anonymous.status_code in (302, 401) and not anonymous.content.startswith(
            part.content[:8]), "the clip needs a login"

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{base}/login?next=/events/{ev['id']}")
            page.fill("#user", VIEWER_USER)
            page.fill("#password", VIEWER_PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/events/{ev['id']}")
            # polled with evaluate: the pages' Content-Security-Policy forbids eval-based waits
            until(page, "(() => { const v = document.querySelector('#event-clip');"
                  " return !!v && v.readyState >= 1 && v.duration > 0; })()", 30)
            duration, width = page.evaluate(
                "() => { const v = document.querySelector('#event-clip');"
                " return [v.duration, v.videoWidth]; }")
            assert duration > 3.0 and width == ev["width"]
            page.evaluate("() => document.querySelector('#event-clip').play()")
            until(page, "document.querySelector('#event-clip').currentTime > 0.5", 30)
            page.screenshot(path=str(artifacts_dir / "event-clip.png"))
        finally:
            page.close()
    finally:
        web.stop()


def test_retention_deletes_old_files_and_index_entries(run: ClipRun) -> None:
    """Last (it deletes): by size, oldest first, then everything by age; runs in-process on the
    run's store, and the service's periodic job once more at the end."""
    from cctv.events import retention

    store = run.store
    ids = [i.decode() for i in run.rdb.zrange(keys.EVENTS_INDEX, 0, -1)]
    total, _files = retention.media_usage(store.media_dir)
    assert total > 0 and len(ids) >= 3
    res = retention.enforce(store, max_age_s=86400, max_count=10_000, max_bytes=total // 2)
    assert res.by_size > 0 and res.bytes_left <= total // 2
    left = [i.decode() for i in run.rdb.zrange(keys.EVENTS_INDEX, 0, -1)]
    assert left == ids[len(ids) - len(left):], "the oldest go first"
    for eid in ids[: len(ids) - len(left)]:
        assert not run.rdb.exists(keys.event(eid))
        assert not list(store.media_dir.rglob(f"{eid}.*"))
    for eid in left:
        assert store.get(eid) is not None
    # by age, through the service's own periodic job
    env = dict(run.events_env, CCTV_EVENTS_RETENTION_DAYS="0.00001",
               CCTV_EVENTS_RETENTION_INTERVAL_S="0.5",
               CCTV_EVENTS_HTTP_BIND=f"127.0.0.1:{free_port()}")
    svc = Service(["events"], env, run.tmp, "events-retention")
    try:
        wait_for(lambda: run.rdb.zcard(keys.EVENTS_INDEX) == 0, 60, "retention by age", [svc])
    finally:
        svc.stop()
    assert "retention: deleted" in svc.log()
    assert not [p for p in store.media_dir.rglob("*") if p.is_file()]
    idx_keys = run.rdb.smembers(keys.EVENTS_INDEX_KEYS)
    assert not [k for k in idx_keys if run.rdb.zcard(k)], "index entries left behind"
    assert not run.rdb.keys("cctv:event:*")
