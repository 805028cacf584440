"""The events service keeps going when the world misbehaves (real processes, real redis-server):
a full (or read-only) snapshot disk and a frame OpenCV refuses cost the images of one event,
counted and dead-lettered with the reason; receivers that answer 500, close the connection or
answer something that is not HTTP, and an entry of the events stream that is not an event,
are dead-lettered; a delivery loop that hits an unexpected error is restarted and counted;
the process never exits."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from events_support import RawReceiver, WebhookReceiver, wait_for

from cctv.core import keys
from cctv.core.entries import encode_frame, encode_result
from cctv.events.storage import EventStore

from support import Service, clip_jpegs, free_port, service_env

CAM = "cam1"
SECRET = "test-webhook-secret-0123456789"


def config(webhooks: list[dict]) -> dict:
    return {"timezone": "UTC", "track_timeout_s": 1.0,
            "cameras": {CAM: {"lines": {"middle": {"points": [[320, 0], [320, 480]],
                                                   "anchor": "center"}},
                              "rules": [{"name": "crossing", "type": "line", "line": "middle",
                                         "classes": ["car"]}]}},
            "webhooks": webhooks}


class Feed:
    """Writes frames and results as the inference leader would: a car crossing the line."""

    def __init__(self, rdb) -> None:
        self.rdb, self.seq, self.ts_ms = rdb, 0, 1_700_000_000_000

    def crossing(self, track: int, jpeg: bytes) -> None:
        for i in range(8):
            self.seq += 1
            self.ts_ms += 100
            ts_us = self.ts_ms * 1000
            frame = self.rdb.xadd(keys.frames(CAM), _fields(encode_frame(
                jpeg, seq=self.seq, ts=ts_us, w=640, h=480, rx=ts_us, late=False)))
            x = 100 + 60 * i
            dets = [{"cls": 2, "name": "car", "conf": 0.9, "xyxy": [x, 200, x + 80, 260],
                     "track": track}]
            self.rdb.xadd(keys.detections(CAM), _fields(encode_result(
                frame=frame.decode(), seq=self.seq, ts=ts_us, rx=ts_us, pick=ts_us, done=ts_us,
                w=640, h=480, late=False, dets=dets, epoch=1, worker="test", model="test",
                infer_ms=1.0)))


def _fields(flat: list) -> dict:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def forged(jpeg: bytes) -> bytes:
    """``jpeg`` with a frame header claiming 65500 x 65500 pixels (OpenCV refuses it)."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[:i + 5] + (65500).to_bytes(2, "big") * 2 + jpeg[i + 9:]


def stats(rdb) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in rdb.hgetall(keys.EVENTS_STATS).items()}


def deadletters(rdb) -> list[dict]:
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _i, f in rdb.xrange(keys.EVENTS_DEADLETTER)]


def start_events(redis_url: str, tmp_path: Path, media: Path, webhooks: list[dict]) -> Service:
    (tmp_path / "events.json").write_text(json.dumps(config(webhooks)))
    env = service_env(redis_url, events_config=tmp_path / "events.json", events_dir=media,
                      webhook_secret=SECRET, events_http_bind=f"127.0.0.1:{free_port()}",
                      cameras=f"{CAM}:tok1-16charsfortests")
    svc = Service(["events"], env, tmp_path, "events")
    # the camera's line comes once its consumer group exists: results from then on are read
    wait_for(lambda: f"camera {CAM}: " in svc.log() and "open events" in svc.log()
             or svc.proc.poll() is not None, 60, "the events service", [svc])
    assert svc.proc.poll() is None, svc.log()
    return svc


@contextlib.contextmanager
def unwritable(media: Path):
    """Make ``media`` refuse new files for the duration: a full tiny tmpfs where this test may
    mount one (root), else a read-only folder (which root would ignore). Yields how."""
    media.mkdir(parents=True, exist_ok=True)
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(media)],
        capture_output=True).returncode == 0
    try:
        yield "tmpfs" if mounted else "read-only"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(media)], check=False)
        else:
            media.chmod(0o755)


def fill(media: Path, how: str) -> None:
    if how == "tmpfs":
        with contextlib.suppress(OSError), open(media / "filler", "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    else:
        media.chmod(0o555)


def unfill(media: Path, how: str) -> None:
    if how == "tmpfs":
        (media / "filler").unlink()
    else:
        media.chmod(0o755)


@pytest.mark.slow
def test_a_full_disk_and_an_opencv_error_cost_the_images_not_the_service(
        redis_server, rdb, tmp_path) -> None:
    jpeg = clip_jpegs(n=1)[0]
    media = tmp_path / "media"
    feed = Feed(rdb)
    with unwritable(media) as how:
        svc = start_events(redis_server.url, tmp_path, media, [])
        try:
            fill(media, how)
            feed.crossing(1, jpeg)  # the disk is full: the event, without its images
            # the snapshot's files, and then its clip, cannot be written
            wait_for(lambda: stats(rdb).get("failed:storage", 0) >= 1, 30, "a storage failure",
                     [svc])
            unfill(media, how)
            feed.crossing(2, forged(jpeg))  # OpenCV refuses the frame: no snapshot
            wait_for(lambda: stats(rdb).get("failed:snapshot") == 1, 30, "a snapshot failure",
                     [svc])
            feed.crossing(3, jpeg)  # the disk has room again: a snapshot as usual
            store = EventStore(rdb, media)
            wait_for(lambda: len(store.query(rule="crossing")) == 3, 30, "three events", [svc])
            assert svc.proc.poll() is None, svc.log()
        finally:
            svc.stop()
        by_track = {e["track"]: e for e in store.query(rule="crossing")}
        assert by_track[1]["snapshot"] == "" and by_track[2]["snapshot"] == ""
        assert store.resolve(by_track[3]["snapshot"]) is not None
        assert store.resolve(by_track[3]["crop"]) is not None
    dead = {d["stage"]: d for d in deadletters(rdb)}
    want = "No space left" if how == "tmpfs" else "Permission denied"
    assert want in dead["storage"]["why"], dead
    assert "does not decode" in dead["snapshot"]["why"], dead
    assert json.loads(dead["storage"]["events"]) == [by_track[1]["id"]]
    assert stats(rdb)["emitted"] == 3
    assert "Traceback" not in svc.log(), svc.log()[-3000:]


@pytest.mark.slow
def test_failing_receivers_a_bad_entry_and_a_crashing_delivery_loop(
        redis_server, rdb, tmp_path) -> None:
    jpeg = clip_jpegs(n=1)[0]
    good = WebhookReceiver().start()
    broken = WebhookReceiver(status=500).start()
    closer = RawReceiver(b"").start()
    garbage = RawReceiver(b"NOT HTTP AT ALL\r\n\r\n").start()
    quick = {"batch_s": 0.3, "max_attempts": 2, "backoff_s": 0.2, "backoff_max_s": 0.4}
    quick["allow_private"] = True  # the receivers listen on loopback
    hooks = [{"name": "good", "url": good.url, "batch_s": 0.3, "images": ["crop"],
              "allow_private": True},
             {"name": "broken", "url": broken.url, **quick},
             {"name": "closer", "url": closer.url, **quick},
             {"name": "garbage", "url": garbage.url, **quick}]
    names = [h["name"] for h in hooks]
    feed = Feed(rdb)
    svc = start_events(redis_server.url, tmp_path, tmp_path / "media", hooks)
    try:
        def groups() -> int:
            with contextlib.suppress(Exception):
                return len(rdb.xinfo_groups(keys.EVENTS))
            return 0

        wait_for(lambda: groups() == 4, 30, "the receivers' groups", [svc])
        feed.crossing(1, jpeg)
        wait_for(lambda: len(good.events()) == 1 and all(
            stats(rdb).get(f"deadletter:{n}") == 1 for n in names[1:]), 30,
            "one delivery and three dead letters", [svc])
        assert closer.connections == 2 and garbage.connections == 2  # both attempts

        # an entry that is not an event: dead-lettered alone, by every receiver
        rdb.xadd(keys.EVENTS, {"type": "event", "id": "junk", "event": b"{not json"})
        wait_for(lambda: all(stats(rdb).get(f"deadletter:{n}") == (1 if n == "good" else 2)
                             for n in names), 30, "the junk entry dead-lettered", [svc])

        # the stream turns into something else for a moment: every delivery loop fails
        rdb.delete(keys.EVENTS)
        rdb.set(keys.EVENTS, "not a stream")
        wait_for(lambda: all(stats(rdb).get(f"restarts:{n}", 0) >= 1 for n in names), 30,
                 "every delivery loop to restart", [svc])
        rdb.delete(keys.EVENTS)
        wait_for(lambda: groups() == 4, 60, "the receivers back", [svc])
        feed.crossing(2, jpeg)
        wait_for(lambda: len(good.events()) == 2, 30, "delivery after the restart", [svc])
        assert svc.proc.poll() is None, svc.log()
    finally:
        svc.stop()
        for r in (good, broken, closer, garbage):
            r.stop()
    whys = [d["why"] for d in deadletters(rdb)]
    assert any("HTTP 500" in w for w in whys), whys
    assert any("RemoteDisconnected" in w or "ConnectionReset" in w for w in whys), whys
    assert any("BadStatusLine" in w for w in whys), whys
    assert sum("not an event entry" in w for w in whys) == 4, whys
    assert good.events()[0]["crop_jpeg_b64"]
    log = svc.log()
    assert log.count("delivery loop failed; restarting") >= 4, log[-3000:]
