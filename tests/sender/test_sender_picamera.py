"""The Pi camera source on each board, through a stand-in that behaves as picamera2 does
there: the encoder the board really has (and a truthful report of it), the configured JPEG
quality, old picamera2 versions, failed opens without descriptor leaks, giving up on a
camera that is gone, sensor timestamps, and every frame counted."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from test_sender_ops import NotifySocket

from cctv_sender.sources import SourceError, build_source, parse_source

from sender_support import (
    SHARED,
    SenderProc,
    open_fds,
    standin_calls,
    standin_env,
    standin_paths,
    stream_seqs,
)

#: camera tokens of the test registry (ingest refuses tokens under 20 characters)
TOK1 = "tok1-16charsfortests"

BUS = SHARED / "media" / "bus.jpg"


def _purge() -> None:
    for name in [m for m in sys.modules if m == "picamera2" or m.startswith("picamera2.")]:
        del sys.modules[name]


@pytest.fixture()
def board(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``board("pi5", "0.3.20", BUSY="1")``: import picamera2 from the stand-in as it is
    on that board and version; returns the stand-in's call log."""
    log = tmp_path / "picamera2.jsonl"

    def use(name: str = "pi4", version: str = "0.3.30", **env: str) -> Path:
        _purge()
        for path in reversed(standin_paths(tmp_path, version)):
            monkeypatch.syspath_prepend(path)
        monkeypatch.setenv("STANDIN_PICAMERA2_JPEG", str(BUS))
        monkeypatch.setenv("STANDIN_PICAMERA2_LOG", str(log))
        monkeypatch.setenv("STANDIN_PICAMERA2_BOARD", name)
        for key, value in env.items():
            monkeypatch.setenv(f"STANDIN_PICAMERA2_{key}", value)
        return log

    yield use
    _purge()


def _grab(src, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        src.grab()
        out.append(src.retrieve())
    return out


# -- the stand-in models the real library -------------------------------------------------------
def test_standin_models_each_board(board) -> None:
    board("pi4")
    from picamera2 import encoders
    assert encoders.MJPEGEncoder.__name__ == "MJPEGEncoder"
    board("pi5", "0.3.30")
    from picamera2 import encoders as pi5
    assert pi5.MJPEGEncoder is pi5.LibavMjpegEncoder  # alias: starts fine, in software
    pi5.MJPEGEncoder()._start()
    board("pi5", "0.3.12")
    from picamera2 import encoders as old
    assert old.MJPEGEncoder.__name__ == "MJPEGEncoder"
    with pytest.raises(RuntimeError):
        old.MJPEGEncoder()._start()


def test_standin_quality_table_and_old_yuv420_are_the_real_flaws(board) -> None:
    board("pi5", "0.3.20")
    from picamera2 import encoders
    enc = encoders.JpegEncoder(q=80)
    enc._setup(encoders.Quality.HIGH)
    assert enc.q == 65  # start_encoder(quality=...) replaces the configured quality
    with pytest.raises(KeyError, match="YUV420"):
        encoders.JpegEncoder(q=80)._check_format("YUV420")


def test_standin_leaks_a_descriptor_per_failed_constructor(board) -> None:
    """What the sender must work around: the real constructor's pipe stays open."""
    board("pi4", BUSY="1")
    from picamera2 import Picamera2
    before = open_fds()
    for _ in range(10):
        with pytest.raises(RuntimeError):
            Picamera2(0)
    assert open_fds() - before >= 10
    Picamera2._cm.cameras.clear()


# -- encoder choice, report, quality ------------------------------------------------------------
@pytest.mark.parametrize(("name", "version", "encoder", "report", "fmt"), [
    ("pi4", "0.3.30", "MJPEGEncoder", "hardware MJPEG", "YUV420"),
    ("zero2w", "0.3.12", "MJPEGEncoder", "hardware MJPEG", "YUV420"),
    ("pi3", "0.3.20", "MJPEGEncoder", "hardware MJPEG", "YUV420"),
    ("pi5", "0.3.30", "JpegEncoder", "software JPEG q80", "YUV420"),
    ("pi5", "0.3.20", "JpegEncoder", "software JPEG q80", "RGB888"),
    ("pi5", "0.3.12", "JpegEncoder", "software JPEG q80", "RGB888"),
])
def test_encoder_follows_the_board_and_is_reported_truthfully(
        board, name: str, version: str, encoder: str, report: str, fmt: str) -> None:
    log = board(name, version)
    src = build_source(parse_source("picamera2:?size=1280x720"), quality=80, fps=30)
    with src:
        frames = _grab(src, 3)
    assert frames[0] == BUS.read_bytes()
    assert report in src.describe()
    started = [c for c in standin_calls(log) if c["event"] == "start_encoder"]
    assert started[-1]["encoder"] == encoder and started[-1]["format"] == fmt
    assert not [c for c in standin_calls(log) if c["event"] == "encoder_thread_died"]
    if encoder == "JpegEncoder":
        assert started[-1]["q"] == 80 and started[-1]["quality"] is None


@pytest.mark.parametrize("quality", [35, 80, 95])
def test_software_jpeg_keeps_the_configured_quality(board, quality: int) -> None:
    log = board("pi5")
    with build_source(parse_source("picamera2:"), quality=quality) as src:
        _grab(src, 1)
    enc = [c for c in standin_calls(log) if c["event"] == "start_encoder"][-1]
    assert enc["q"] == quality


def test_hardware_encoder_asked_for_on_a_pi5_is_a_clear_error(board) -> None:
    board("pi5")
    with pytest.raises(SourceError, match="no hardware MJPEG encoder"):
        build_source(parse_source("picamera2:?encoder=hw")).open()
    board("pi4")
    with build_source(parse_source("picamera2:?encoder=sw"), quality=70) as src:
        _grab(src, 1)
    assert "software JPEG q70" in src.describe()


# -- failed opens -------------------------------------------------------------------------------
@pytest.mark.parametrize("problem", [{"CAMERAS": "0"}, {"BUSY": "1"}])
def test_failed_opens_leak_no_descriptor(board, problem: dict[str, str]) -> None:
    board("pi4", **problem)
    from picamera2 import Picamera2
    src = build_source(parse_source("picamera2:"))
    with pytest.raises(SourceError, match="cannot open camera"):
        src.open()  # warm up imports and caches
    before = open_fds()
    for _ in range(50):
        with pytest.raises(SourceError, match="cannot open camera"):
            src.open()
        src.close()
    assert open_fds() == before
    assert Picamera2._cm.cameras == {}  # nothing left registered either


def test_no_camera_message_says_so(board) -> None:
    board("pi4", CAMERAS="0")
    with pytest.raises(SourceError, match="no camera connected"):
        build_source(parse_source("picamera2:")).open()
    board("pi4", CAMERAS="1")
    with pytest.raises(SourceError, match="only 1 camera"):
        build_source(parse_source("picamera2:1")).open()


def test_camera_gone_exits_non_zero_and_stops_the_watchdog(tmp_path: Path) -> None:
    """The camera streams, then is unplugged: pings while it streams, none once it has been
    gone for the stall time, and the process exits 1 after --camera-gone-max."""
    path = str(tmp_path / "notify")
    listener = NotifySocket(path)
    env = standin_env(tmp_path, CCTV_SENDER_TOKEN=TOK1, NOTIFY_SOCKET=path,
                      WATCHDOG_USEC="300000", STANDIN_PICAMERA2_GONE_AFTER="30")
    started = time.monotonic()
    s = SenderProc(["--ingest", "http://127.0.0.1:9", "--camera", "cam1", "--source",
                    "picamera2:?size=640x480", "--fps", "15", "--timeout", "0.5",
                    "--reconnect-max", "0.3", "--camera-gone-max", "3", "--spool-mb", "0"],
                   tmp_path / "state", tmp_path, env=env)
    assert s.wait(30) == 1, s.log()
    ended = time.monotonic()
    time.sleep(0.2)
    listener.close()
    assert "no frame from picamera2:0" in s.log() and "exiting" in s.log()
    last_frame = max(c["t"] for c in _frame_times(tmp_path))
    pings = [t for t, m in listener.messages if m == "WATCHDOG=1"]
    assert [p for p in pings if p < last_frame], "no pings while streaming"
    # the stall time is 3 s here: no ping later than that after the last frame
    assert not [p for p in pings if p > last_frame + 3.3], (pings, last_frame)
    assert ended - started < 25
    opens = [c for c in standin_calls(tmp_path / "picamera2.jsonl") if c["event"] == "open"]
    assert len(opens) == 1  # later attempts found no camera and constructed nothing


def _frame_times(tmp_path: Path) -> list[dict]:
    """The stand-in's frames with their time on this process's monotonic clock."""
    return [{"t": c["sensor_us"] / 1e6} for c in standin_calls(tmp_path / "picamera2.jsonl")
            if c["event"] == "sensor_frame"]


# -- timestamps ---------------------------------------------------------------------------------
def test_capture_time_is_the_sensor_time_on_the_wall_clock(board) -> None:
    log = board("pi5", ENCODE_MS="300")  # the encoder holds frames for 0.3 s
    with build_source(parse_source("picamera2:"), fps=20) as src:
        src.grab()
        src.grab()
        dequeued_us = time.time_ns() // 1000
        ts = src.capture_ts_us()
    assert ts is not None
    assert dequeued_us - ts > 250_000  # the sensor time, not when the encoder let go
    sensor = [c["sensor_us"] for c in standin_calls(log) if c["event"] == "sensor_frame"]
    offset_us = (time.time_ns() - time.monotonic_ns()) // 1000
    assert min(abs(ts - (s + offset_us)) for s in sensor) < 5_000


# -- every frame counted, sensor at the sender's fps -------------------------------------------
def test_sensor_runs_at_the_sender_fps_and_every_frame_is_counted(ingest, rdb,
                                                                  tmp_path: Path) -> None:
    ing = ingest()
    env = standin_env(tmp_path, CCTV_SENDER_TOKEN=TOK1)
    s = SenderProc(["--ingest", ing.url, "--camera", "cam1", "--source",
                    "picamera2:?size=640x480&fps=30", "--fps", "10", "--max-frames", "25",
                    "--queue", "1"], tmp_path / "state", tmp_path, env=env)
    assert s.wait(60) == 0, s.log()
    calls = standin_calls(tmp_path / "picamera2.jsonl")
    config = next(c["config"] for c in calls if c["event"] == "configure")
    assert config["controls"] == {"FrameRate": 10.0}  # not 30: nothing encoded to be dropped
    st = s.stats()
    produced = sum(1 for c in calls if c["event"] == "sensor_frame")
    assert st["source_frames"] + st["superseded"] == produced
    left_out = st["superseded"] + st["skipped"] + st["seq_failed"]
    settled = (st["delivered"] + st["dropped"] + st["evicted"] + st["spool_failed"]
               + st["rejected"])
    assert st["captured"] == 25 == settled
    assert produced - left_out - settled == 0  # every sensor frame explained by a counter
    assert st["skipped"] <= 2  # the sensor already runs at the limit
    assert len(stream_seqs(rdb, "cam1")) == st["delivered"] - st["duplicates"]


def test_superseded_frames_are_counted(board) -> None:
    board("pi4")
    with build_source(parse_source("picamera2:"), fps=50) as src:
        src.grab()
        time.sleep(0.5)  # ~25 frames come while nobody takes them
        src.grab()
        assert src.superseded >= 10
        before = src.superseded
    assert src.superseded >= before  # the frame left in the slot at close is counted too


# -- configuration, errors, stalls --------------------------------------------------------------
def test_hardware_encoder_with_mode_size_fps(board) -> None:
    log = board("pi4")
    src = build_source(parse_source("picamera2:?size=1280x720&fps=40&mode=1"), quality=85)
    with src:
        started = time.monotonic()
        frames = _grab(src, 9)
        elapsed = time.monotonic() - started
    assert frames[0] == BUS.read_bytes()
    assert 0.18 < elapsed < 15  # 8 intervals at 40 fps (never faster; slower if loaded)
    calls = standin_calls(log)
    config = next(c["config"] for c in calls if c["event"] == "configure")
    assert config["main"] == {"size": [1280, 720], "format": "YUV420"}
    assert config["controls"] == {"FrameRate": 40.0}
    assert config["sensor"] == {"output_size": [2028, 1080], "bit_depth": 12}
    enc = next(c for c in calls if c["event"] == "start_encoder")
    assert enc["encoder"] == "MJPEGEncoder" and "HIGH" in enc["quality"]
    assert calls[-1]["event"] == "close"


def test_bad_mode_and_missing_library(board, monkeypatch: pytest.MonkeyPatch) -> None:
    board("pi4")
    with pytest.raises(SourceError, match="sensor mode 7 does not exist"):
        build_source(parse_source("picamera2:?mode=7")).open()
    _purge()
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as off a Pi
    with pytest.raises(SourceError, match="apt install python3-picamera2"):
        build_source(parse_source("picamera2:")).open()


def test_stall_reconnects_end_to_end(ingest, rdb, tmp_path: Path) -> None:
    """The stand-in stops after 5 frames per open: the sender notices, reopens, goes on."""
    ing = ingest()
    env = standin_env(tmp_path, CCTV_SENDER_TOKEN=TOK1, STANDIN_PICAMERA2_STALL_AFTER="5")
    s = SenderProc(["--ingest", ing.url, "--camera", "cam1", "--source",
                    "picamera2:?fps=30&size=640x480", "--fps", "0", "--max-frames", "12",
                    "--timeout", "0.5", "--reconnect-max", "0.3"], tmp_path / "state",
                   tmp_path, env=env)
    assert s.wait(30) == 0, s.log()
    assert len(stream_seqs(rdb, "cam1")) == 12
    opens = [c for c in standin_calls(tmp_path / "picamera2.jsonl") if c["event"] == "open"]
    assert len(opens) >= 3
    assert "no frame for" in s.log()
    _id, fields = rdb.xrange("cctv:frames:cam1", count=1)[0]
    assert (int(fields[b"w"]), int(fields[b"h"])) == (810, 1080)  # bus.jpg, as sent
