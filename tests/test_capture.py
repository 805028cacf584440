"""The capture service (`cctv capture`): cameras registered with a source URL are pulled by
exactly one capture instance at a time, spread over the instances, taken over within a few
seconds when the puller dies, fenced when it comes back, released when removed.

Real parts: redis-server with the production ACL, ingest (gunicorn), two `cctv capture`
processes, an RTSP camera (GStreamer's RTSP server serving the sample clip as H.264, run with
the system Python, tests/rtsp_clip_server.py) and an HTTP MJPEG camera. Unit tests of the
assignment rules, the lease and the resend queue first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from cctv.capture import assignment
from cctv.capture.lease import CameraLease, renew_all
from cctv.capture.outbox import Outbox
from cctv.core import keys
from cctv.core.registry import Camera, Registry
from cctv.core.scripts import CAPTURE_SEQ_SPAN, Scripts
from cctv_sender.frame import Frame

from support import (
    CLIP,
    ROOT,
    RedisServer,
    Service,
    clip_jpegs,
    free_port,
    post_frame,
    redis_password_for,
    service_env,
    wait_for,
)

sys.path.insert(0, str(ROOT / "tests" / "sender"))
from sender_support import MjpegServer  # noqa: E402

CAPTURE_TOKEN = "capture-token-for-tests-0123456789"
RTSP_SERVER = ROOT / "tests" / "rtsp_clip_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
TTL_MS = 1500


# ---- assignment (pure) ---------------------------------------------------------------------

def _cams(*specs: tuple[str, str | None, str | None]) -> dict[str, Camera]:
    return {n: Camera(name=n, source=src, node=node) for n, src, node in specs}


def test_fair_share_is_the_ceiling_over_live_instances() -> None:
    assert assignment.fair_share(2, 2) == 1
    assert assignment.fair_share(3, 2) == 2
    assert assignment.fair_share(3, 1) == 3
    assert assignment.fair_share(1, 3) == 1
    assert assignment.fair_share(0, 2) == 0
    assert assignment.fair_share(5, 0) == 5  # never divides by zero: this instance counts
    assert assignment.fair_share(9, 1, max_cameras=4) == 4


def test_plan_claims_up_to_the_share_and_never_a_held_camera() -> None:
    cams = _cams(("a", "rtsp://h/a", None), ("b", "rtsp://h/b", None),
                 ("c", "rtsp://h/c", None), ("d", "rtsp://h/d", None))
    p = assignment.plan(cams, "n1", held=[], holders={"a": "other", "b": None, "c": None,
                                                     "d": None}, live_instances=2)
    assert p.share == 2 and p.claim == ("b", "c") and p.drop == ()
    # one held already: one more
    p = assignment.plan(cams, "n1", held=["b"], holders={"a": "x", "c": None, "d": None},
                        live_instances=2)
    assert p.claim == ("c",)
    # everything held by others: nothing, whatever the share
    p = assignment.plan(cams, "n1", held=[], holders=dict.fromkeys("abcd", "x"),
                        live_instances=4)
    assert p.claim == ()


def test_plan_follows_node_constraints_sources_and_removals() -> None:
    cams = _cams(("here", "rtsp://h/1", "n1"), ("there", "rtsp://h/2", "n2"),
                 ("pushed", None, None), ("any", "http://h/3", None))
    assert assignment.may_pull(cams["here"], "n1") and not assignment.may_pull(cams["there"],
                                                                               "n1")
    assert not assignment.may_pull(cams["pushed"], "n1")  # a sender posts it: no source
    p = assignment.plan(cams, "n1", held=["gone", "there"], holders={"here": None,
                                                                    "any": None},
                        live_instances=1)
    assert p.drop == ("gone", "there")
    assert p.claim == ("any", "here")


def test_plan_takes_an_orphan_beyond_the_share() -> None:
    """A camera free for longer than orphan_s is taken even above the share (a dead
    instance still counted as live must not leave it unpulled), within max_cameras."""
    cams = _cams(("a", "rtsp://h/a", None), ("b", "rtsp://h/b", None))
    holders = {"b": None}
    p = assignment.plan(cams, "n", held=["a"], holders=holders, live_instances=2,
                        free_since={"b": 10.0}, now=10.5, orphan_s=3.0)
    assert p.claim == ()
    p = assignment.plan(cams, "n", held=["a"], holders=holders, live_instances=2,
                        free_since={"b": 10.0}, now=13.5, orphan_s=3.0)
    assert p.claim == ("b",)
    p = assignment.plan(cams, "n", held=["a"], holders=holders, live_instances=2,
                        free_since={"b": 10.0}, now=13.5, orphan_s=3.0, max_cameras=1)
    assert p.claim == ()
    assert assignment.surplus(3, 1) == 2 and assignment.surplus(1, 2) == 0


def test_outbox_keeps_the_newest_and_returns_what_it_drops() -> None:
    box = Outbox(2)
    frames = [Frame(jpeg=b"x", ts_us=i, seq=i) for i in range(3)]
    assert box.put(frames[0]) is None and box.put(frames[1]) is None
    assert box.put(frames[2]) is frames[0]
    assert box.peek(0) is frames[1]
    box.done(frames[1])
    assert box.peek(0) is frames[2] and len(box) == 1
    assert box.drain() == [frames[2]] and box.peek(0) is None


# ---- the lease, against a real Redis as the capture user ----------------------------------

def _capture_client(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, username="capture",
                       password=redis_password_for("capture"))


def test_lease_moves_the_floor_and_fences(redis_server: RedisServer, rdb) -> None:
    client = _capture_client(redis_server)
    scripts = Scripts(client)
    a = CameraLease(client, scripts, "cam1", "node-a-1", 400)
    b = CameraLease(client, scripts, "cam1", "node-b-2", 400)
    assert not a.try_acquire(), "a camera not in the registry is never claimed"
    Registry(rdb).add("cam1", source="rtsp://camera.example/stream")
    assert a.try_acquire() and a.epoch == 1 and a.floor == CAPTURE_SEQ_SPAN
    assert rdb.get(keys.capture_floor("cam1")) == str(CAPTURE_SEQ_SPAN).encode()
    assert not b.try_acquire(), "a held lease is never taken"
    renew_all(client, scripts, [a])
    assert a.held()
    time.sleep(0.45)  # a stopped renewing (a frozen or dead instance): the lease expires
    assert not a.held()
    assert b.try_acquire() and b.epoch == 2 and b.floor == 2 * CAPTURE_SEQ_SPAN
    # a comes back: its renewal is refused, it counts as lost at once
    a._last_ok = time.monotonic()
    a._lost.clear()
    renew_all(client, scripts, [a])
    assert not a.held() and "another instance" in a.lost_reason
    assert not a.release(), "compare-and-delete: not a's any more"
    assert b.release() and rdb.get(keys.capture_lease("cam1")) is None
    # the floor only grows: a big epoch is written exactly
    rdb.set(keys.capture_epoch("cam1"), 123456)
    c = CameraLease(client, scripts, "cam1", "node-c-3", 400)
    assert c.try_acquire() and c.floor == 123457 * CAPTURE_SEQ_SPAN
    client.close()


def test_the_capture_user_cannot_change_the_registry_or_write_frames(
        redis_server: RedisServer, rdb) -> None:
    Registry(rdb).add("cam1", source="rtsp://camera.example/stream")
    client = _capture_client(redis_server)
    assert client.hgetall(keys.CAMERAS_REGISTRY)  # reads it
    for write in (lambda: client.hset(keys.CAMERAS_REGISTRY, "cam1", "{}"),
                  lambda: client.delete(keys.CAMERAS_REGISTRY),
                  lambda: client.xadd(keys.frames("cam1"), {"seq": 1}),
                  lambda: client.set(keys.dedup("cam1", 1), "x"),
                  lambda: client.set(keys.LEASE_INFERENCE, "x")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            write()
    client.close()
    assert redis_server.acl_denials()  # the refusals expected here, cleared for the fixture


# ---- one puller against a stand-in ingest: resends, overflow, fencing ----------------------

class FakeIngest:
    """An HTTP server taking frame POSTs: 503 while ``down``, ``reply`` otherwise; records the
    seq of every frame it answered 202."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.down, self.reply, self.accepted = False, 202, []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_a: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                self.rfile.read(int(self.headers["Content-Length"]))
                assert self.headers["Authorization"] == f"Bearer {CAPTURE_TOKEN}"
                status = 503 if fake.down else fake.reply
                if status == 202:
                    with fake.lock:
                        fake.accepted.append(int(self.headers["X-Frame-Seq"]))
                body = b'{"error":"fenced"}' if status == 409 else b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _dropped(camera: str, reason: str) -> float:
    from cctv.capture import metrics

    return metrics.DROPPED.labels(camera, reason)._value.get()


def test_puller_resends_after_an_outage_counts_overflow_and_stops_when_fenced(
        redis_server: RedisServer, rdb) -> None:
    from cctv.capture.puller import Puller
    from cctv.capture.settings import CaptureSettings

    fake = FakeIngest()
    client = _capture_client(redis_server)
    scripts = Scripts(client)
    cam, _token = Registry(rdb).add("filecam", source=f"file:{CLIP}?loop=1", fps=20)
    lease = CameraLease(client, scripts, "filecam", "node-a-1", 3000)
    assert lease.try_acquire()
    s = CaptureSettings(capture_ingest=fake.url, capture_queue_frames=8, redis_url="redis://x")
    puller = Puller(cam, lease, s, CAPTURE_TOKEN).start()
    renewing = True

    def renew() -> None:
        while renewing:
            renew_all(client, scripts, [lease])
            time.sleep(0.3)

    import threading
    threading.Thread(target=renew, daemon=True).start()
    try:
        wait_for(lambda: len(fake.accepted) >= 5, 15, "frames posted")
        fake.down = True  # ingest down for ~1 s at 20 fps: more frames than the queue holds
        time.sleep(1.2)
        fake.down = False
        wait_for(lambda: _dropped("filecam", "queue_full") > 0 and len(fake.accepted) > 30, 10,
                 "the resend after the outage")
        got = sorted(fake.accepted)
        assert got[0] == lease.floor and len(got) == len(set(got))
        # what was not accepted was dropped from the full queue, counted
        missing = set(range(got[0], got[-1] + 1)) - set(got)
        assert 0 < len(missing) == _dropped("filecam", "queue_full")
        fake.reply = 409  # a newer holder moved the floor: the puller stops at once
        wait_for(lambda: not puller.running, 5, "the puller to stop when fenced")
        assert puller.stop_reason == "fenced" and not lease.held()
    finally:
        renewing = False
        puller.stop("test over")
        puller.join(5)
        fake.close()
        client.close()


# ---- end to end: real processes -----------------------------------------------------------

@contextlib.contextmanager
def rtsp_camera(workdir: Path, clip: Path = CLIP, repeat: int = 6) -> Iterator[str]:
    """``rtsp://127.0.0.1:<port>/live``: GStreamer's RTSP server (system Python) serving
    ``clip`` (H.264) copied ``repeat`` times end to end, without re-encoding."""
    if not Path(SYSTEM_PYTHON).exists() or subprocess.run(
            [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import GstRtspServer"], capture_output=True).returncode:
        pytest.skip("GStreamer's RTSP server is missing: apt-get install "
                    "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good "
                    "gstreamer1.0-plugins-bad python3-gi (./dev setup does)")
    port = free_port()
    log = open(workdir / "rtsp-server.log", "w+b")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([SYSTEM_PYTHON, str(RTSP_SERVER), str(clip), str(port),
                             str(repeat)], stdout=log, stderr=subprocess.STDOUT,
                            env={k: v for k, v in os.environ.items()
                                 if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError("RTSP server exited: " + (workdir / "rtsp-server.log")
                                     .read_text(errors="replace"))
            return b"ready" in (workdir / "rtsp-server.log").read_bytes()

        wait_for(ready, 60, "the RTSP server")
        yield f"rtsp://127.0.0.1:{port}/live"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


class CaptureRig:
    """Ingest, capture instances and what Redis says about them."""

    def __init__(self, rdb, redis_url: str, ingest_url: str, workdir: Path) -> None:
        self.rdb, self.redis_url, self.ingest_url, self.workdir = rdb, redis_url, \
            ingest_url, workdir
        self.instances: list[Service] = []

    def start_instance(self, name: str, **cctv: object) -> Service:
        cctv.setdefault("capture_lease_ttl_ms", TTL_MS)
        ops = f"127.0.0.1:{free_port()}"
        env = service_env(self.redis_url, capture_ingest=self.ingest_url,
                          capture_token=CAPTURE_TOKEN, capture_http_bind=ops, **cctv)
        svc = Service(["capture"], env, self.workdir, name)
        svc.ops_url = f"http://{ops}"
        self.instances.append(svc)
        return svc

    def holder(self, camera: str) -> Service | None:
        """The instance whose id holds ``camera``'s lease (None: free)."""
        raw = self.rdb.get(keys.capture_lease(camera))
        if raw is None:
            return None
        pid = int(raw.decode().rsplit("-", 1)[1])
        return next((s for s in self.instances if s.proc.pid == pid), None)

    def seqs(self, camera: str) -> list[int]:
        """Seqs of the camera's frames stream, in stream order."""
        return [int(f[b"seq"]) for _id, f in self.rdb.xrange(keys.frames(camera))]

    def entries(self, camera: str) -> list[tuple[int, int]]:
        """(stream id ms, seq) of each frame."""
        return [(int(i.decode().split("-")[0]), int(f[b"seq"]))
                for i, f in self.rdb.xrange(keys.frames(camera))]

    def accepted(self, camera: str) -> int:
        """Frames ingest answered 202 for (its per-camera counter)."""
        return int(self.rdb.hget(keys.stats(camera), "accepted") or 0)

    def stop(self) -> None:
        for svc in self.instances:
            svc.signal(signal.SIGCONT)
            svc.stop()

    def logs(self) -> list[Service]:
        return self.instances


@pytest.fixture()
def rig(rdb, redis_server: RedisServer, start_ingest, tmp_path: Path) -> Iterator[CaptureRig]:
    url, ingest = start_ingest(capture_token=CAPTURE_TOKEN, frames_maxlen=2000)
    r = CaptureRig(rdb, redis_server.url, url, tmp_path)
    r.ingest = ingest
    try:
        yield r
    finally:
        r.stop()


def _check_stream(rig: CaptureRig, camera: str) -> list[int]:
    """Every frame ingest accepted is in the stream once, no seq twice."""
    seqs = rig.seqs(camera)
    assert len(seqs) == len(set(seqs)), f"{camera}: a seq was reused"
    assert rig.accepted(camera) == len(seqs), (
        f"{camera}: ingest accepted {rig.accepted(camera)} frames, the stream has {len(seqs)}")
    return seqs


def test_cameras_spread_and_a_killed_instance_is_taken_over(rig: CaptureRig,
                                                            tmp_path: Path) -> None:
    frames = clip_jpegs(n=20, step=5)
    with rtsp_camera(tmp_path) as rtsp_url, MjpegServer(frames, fps=15) as mjpeg:
        reg = Registry(rig.rdb)
        reg.add("rtsp1", source=rtsp_url, fps=10)
        reg.add("mjpeg1", source=f"{mjpeg.url}/video.mjpg", fps=10)
        a, b = rig.start_instance("capture-a"), rig.start_instance("capture-b")
        cams = ("rtsp1", "mjpeg1")
        wait_for(lambda: all(rig.holder(c) is not None for c in cams)
                 and rig.holder("rtsp1") is not rig.holder("mjpeg1"), 20,
                 "each instance to pull one camera", rig.logs())
        wait_for(lambda: all(len(rig.seqs(c)) >= 5 for c in cams), 20,
                 "frames of both cameras", [*rig.logs(), rig.ingest])
        victim = rig.holder("rtsp1")
        survivor = b if victim is a else a
        old_max = max(rig.seqs("rtsp1"))
        assert old_max < 2 * CAPTURE_SEQ_SPAN
        victim.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: any(s >= 2 * CAPTURE_SEQ_SPAN for s in rig.seqs("rtsp1")), 8,
                 "the survivor's first frame of the taken-over camera", rig.logs())
        took_s = time.monotonic() - killed_at
        assert rig.holder("rtsp1") is survivor and rig.holder("mjpeg1") is survivor
        count = len(rig.seqs("mjpeg1"))
        wait_for(lambda: len(rig.seqs("mjpeg1")) >= count + 3, 8,
                 "frames of the other camera", rig.logs())
        time.sleep(0.5)
        ready = requests.get(f"{survivor.ops_url}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["cameras"] == 2
        text = requests.get(f"{survivor.ops_url}/metrics", timeout=5).text
        assert 'cctv_capture_frames_total{camera="rtsp1",outcome="delivered"}' in text
        assert "cctv_capture_cameras 2.0" in text
        survivor.signal(signal.SIGTERM)  # releases its leases, then exits
        assert survivor.proc.wait(10) == 0
        assert rig.rdb.get(keys.capture_lease("rtsp1")) is None, "SIGTERM releases the lease"
    for cam in cams:
        seqs = _check_stream(rig, cam)
        floors = sorted({s // CAPTURE_SEQ_SPAN for s in seqs})
        # within one holder the seqs go up by one; each take-over starts above all before
        for i in range(1, len(seqs)):
            assert seqs[i] > seqs[i - 1], f"{cam}: seqs not increasing at {i}"
        assert floors[0] >= 1
    new = [s for s in rig.seqs("rtsp1") if s >= 2 * CAPTURE_SEQ_SPAN]
    assert new and min(new) == 2 * CAPTURE_SEQ_SPAN and min(new) > old_max
    assert took_s < 6, f"take-over took {took_s:.1f} s"
    assert "first frame accepted" in survivor.log()


def test_a_frozen_instance_is_fenced_and_a_removed_camera_released(rig: CaptureRig) -> None:
    frames = clip_jpegs(n=20, step=5)
    with MjpegServer(frames, fps=15) as mjpeg:
        reg = Registry(rig.rdb)
        reg.add("cam3", source=f"{mjpeg.url}/video.mjpg", fps=10)
        a = rig.start_instance("capture-a")
        wait_for(lambda: rig.holder("cam3") is a and len(rig.seqs("cam3")) >= 3, 20,
                 "a to pull cam3", rig.logs())
        b = rig.start_instance("capture-b")
        time.sleep(1.0)
        a.signal(signal.SIGSTOP)  # frozen past the TTL: b takes the camera over
        wait_for(lambda: any(s >= 2 * CAPTURE_SEQ_SPAN for s in rig.seqs("cam3")), 10,
                 "b's first frame of cam3", rig.logs())
        assert rig.holder("cam3") is b
        a.signal(signal.SIGCONT)
        wait_for(lambda: "stopped pulling" in a.log(), 10, "a to stop pulling cam3",
                 rig.logs())
        time.sleep(1.0)
        # a's frames posted from now on would carry seqs below the floor: ingest refuses them
        resp = post_frame(requests.Session(), rig.ingest_url, "cam3", CAPTURE_TOKEN,
                          frames[0], CAPTURE_SEQ_SPAN + 10_000)
        assert resp.status_code == 409 and resp.json()["error"] == "fenced"
        entries = rig.entries("cam3")
        first_new = next(i for i, (_ms, s) in enumerate(entries) if s >= 2 * CAPTURE_SEQ_SPAN)
        assert all(s >= 2 * CAPTURE_SEQ_SPAN for _ms, s in entries[first_new:]), \
            "a frame of the deposed instance entered the stream after the new owner's first"
        assert rig.holder("cam3") is b, "the deposed instance never takes a held lease"
        _check_stream(rig, "cam3")

        # removing the camera stops its puller and releases the lease
        reg.remove("cam3")
        wait_for(lambda: rig.rdb.get(keys.capture_lease("cam3")) is None, 5,
                 "cam3's lease to be released", rig.logs())
        # (by its scan of the registry, or at once by ingest's refusal of a removed camera)
        wait_for(lambda: "stopped pulling (removed)" in b.log()
                 or "stopped pulling (rejected)" in b.log(), 5, "b to stop cam3", rig.logs())
        count = mjpeg.connections
        time.sleep(1.5)
        assert mjpeg.connections == count, "a removed camera is not reconnected"
