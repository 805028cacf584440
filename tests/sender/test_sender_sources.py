"""Every source kind behind the same interface: files, HTTP MJPEG (our viewer's format and
mjpg-streamer's), JPEG snapshots, RTSP (the Pi camera: test_sender_picamera.py)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from rtsp_relay import RtspRelay

from cctv_sender.jpeg import jpeg_size
from cctv_sender.sources import Source, SourceEnded, SourceError, build_source, parse_source

from sender_support import (
    CLIP_480,
    CLIP_720,
    MjpegServer,
    SenderProc,
    sender_env,
    stream_seqs,
    wait_for,
)

#: camera tokens of the test registry (ingest refuses tokens under 20 characters)
TOK1 = "tok1-16charsfortests"


def _frames(src: Source, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        src.grab()
        out.append(src.retrieve())
    return out


# -- files --------------------------------------------------------------------------------------
def test_file_paced_at_its_own_rate_then_ends() -> None:
    src = build_source(parse_source(f"file:{CLIP_480}"))
    with src:
        assert src.nominal_fps == pytest.approx(30.0)
        started = time.monotonic()
        frames = _frames(src, 16)
        elapsed = time.monotonic() - started
    assert 0.45 < elapsed < 15  # 15 intervals of 1/30 s (never faster; slower if loaded)
    assert all(jpeg_size(f) == (640, 480) for f in frames)


def test_file_given_fps_size_quality_and_loop() -> None:
    src = build_source(parse_source(f"file:{CLIP_720}?fps=50&size=640x360&quality=50"),
                       loop=True)
    with src:
        started = time.monotonic()
        frames = _frames(src, 11)
        assert 0.18 < time.monotonic() - started < 15  # 10 intervals of 1/50 s, never faster
        assert jpeg_size(frames[0]) == (640, 360)
        # loop: run past the end of the 335-frame clip as fast as the decoder goes
        src._interval = 0.0
        for _ in range(340):
            src.grab()
        assert src.loops == 1
    assert len(frames[0]) < 60_000


def test_file_without_loop_ends() -> None:
    src = build_source(parse_source(f"file:{CLIP_720}?fps=0"))
    with src, pytest.raises(SourceEnded):
        for _ in range(400):
            src.grab()


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        build_source(parse_source(f"file:{tmp_path}/none.mp4")).open()


# -- HTTP MJPEG ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/video.mjpg", "/?action=stream", "/nolength"])
def test_mjpeg_stream_formats(path: str, jpegs: list[bytes]) -> None:
    with MjpegServer(jpegs, fps=100) as cam:
        src = build_source(parse_source(cam.url + path))
        with src:
            frames = _frames(src, 12)
    # bytes passed through untouched, in order
    start = jpegs.index(frames[0])
    assert frames == [jpegs[(start + i) % len(jpegs)] for i in range(12)]


def test_mjpeg_snapshot_url_is_polled(jpegs: list[bytes]) -> None:
    with MjpegServer(jpegs) as cam:
        src = build_source(parse_source(cam.url + "/snapshot.jpg"))
        with src:
            frames = _frames(src, 3)
        assert "snapshots" in src.describe()
        assert cam.connections == 3 and frames == jpegs[:3]


def test_mjpeg_basic_auth_from_the_url(jpegs: list[bytes]) -> None:
    with MjpegServer(jpegs, fps=100) as cam:
        with pytest.raises(SourceError, match="HTTP 401.*user and password"):
            build_source(parse_source(cam.url + "/auth")).open()
        url = cam.url.replace("http://", "http://user:secret@") + "/auth"
        src = build_source(parse_source(url))
        assert "secret" not in src.name
        with src:
            assert _frames(src, 2)[0] in jpegs


def test_mjpeg_errors_are_source_errors(jpegs: list[bytes]) -> None:
    with MjpegServer(jpegs, fps=100, short_after=3) as cam:
        with pytest.raises(SourceError, match="404"):
            build_source(parse_source(cam.url + "/missing")).open()
        src = build_source(parse_source(cam.url + "/short"))
        src.open()
        _frames(src, 3)
        with pytest.raises(SourceError, match="ended"):
            src.grab()
        src.close()
    with pytest.raises(SourceError, match="connection refused"):
        build_source(parse_source(cam.url + "/video.mjpg")).open()


def test_mjpeg_camera_loss_reconnects_and_keeps_sending(ingest, rdb, tmp_path: Path,
                                                        jpegs: list[bytes]) -> None:
    ing = ingest()
    with MjpegServer(jpegs, fps=50, short_after=4) as cam:
        s = SenderProc(["--ingest", ing.url, "--camera", "cam1", "--source", cam.url + "/short",
                        "--fps", "0", "--max-frames", "12", "--reconnect-max", "0.3"],
                       tmp_path / "state", tmp_path, env=sender_env(CCTV_SENDER_TOKEN=TOK1))
        assert s.wait(30) == 0, s.log()
        assert cam.connections >= 3
    stats = s.stats()
    assert stats["reconnects"] >= 2 and stats["delivered"] == 12
    assert "lost (" in s.log() and "stream ended" in s.log()
    assert len(stream_seqs(rdb, "cam1")) == 12


# -- RTSP ---------------------------------------------------------------------------------------
def _ffmpeg_has_x264() -> bool:
    exe = shutil.which("ffmpeg")
    if not exe:
        return False
    out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True,
                         timeout=30)
    return "libx264" in out.stdout


needs_ffmpeg = pytest.mark.skipif(not _ffmpeg_has_x264(),
                                  reason="ffmpeg with libx264 is needed to serve RTSP "
                                         "(apt install ffmpeg)")


@pytest.fixture()
def rtsp(tmp_path: Path):
    relay = RtspRelay(CLIP_480, tmp_path).start()
    yield relay
    relay.stop()


@needs_ffmpeg
def test_rtsp_source_reads_h264_and_notices_loss(rtsp: RtspRelay) -> None:
    src = build_source(parse_source(rtsp.url), timeout_s=5)
    with src:
        frames = _frames(src, 5)
        assert jpeg_size(frames[-1]) == (640, 480)
        rtsp.drop_clients()
        with pytest.raises(SourceError, match="camera lost"):
            for _ in range(300):
                src.grab()


@needs_ffmpeg
def test_rtsp_camera_reboot_end_to_end(rtsp: RtspRelay, ingest, rdb, tmp_path: Path) -> None:
    ing = ingest()
    s = SenderProc(["--ingest", ing.url, "--camera", "cam1", "--source", rtsp.url, "--fps",
                    "20", "--max-frames", "40", "--reconnect-max", "0.5", "--timeout", "5"],
                   tmp_path / "state", tmp_path, env=sender_env(CCTV_SENDER_TOKEN=TOK1))
    wait_for(lambda: rdb.xlen("cctv:frames:cam1") >= 10, 30, "RTSP frames at ingest")
    rtsp.drop_clients()
    assert s.wait(60) == 0, s.log()
    assert rtsp.sessions >= 2 and s.stats()["reconnects"] >= 1
    seqs = [seq for seq, _late in stream_seqs(rdb, "cam1")]
    assert len(seqs) == 40 == len(set(seqs))
    assert "rtsp://127.0.0.1" in s.log() and "streaming" in s.log()


# -- V4L2 (no webcam here: only the failure path can run) ---------------------------------------
def test_v4l2_missing_device_is_a_source_error() -> None:
    src = build_source(parse_source("v4l2:/dev/video99?size=640x480"), fps=5)
    assert (src.size, src.req_fps, src.fourcc) == ((640, 480), 5, "MJPG")
    with pytest.raises(SourceError, match="v4l2:/dev/video99: cannot open"):
        src.open()
