"""In-process tests of the sender's parts: config, source strings, sequence, spool, queue."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cctv_sender.backoff import Backoff
from cctv_sender.config import ConfigError, load_config
from cctv_sender.frame import Frame
from cctv_sender.jpeg import jpeg_size
from cctv_sender.livequeue import LiveQueue
from cctv_sender.sender import RateGate
from cctv_sender.sources import SourceConfigError, parse_source, redact
from cctv_sender.spool import Spool
from cctv_sender.state import SequenceCounter, StateDir, StateError

#: camera tokens of the test registry (ingest refuses tokens under 20 characters)
TOK1 = "tok1-16charsfortests"

BASE = ["--source", "file:/x.mp4", "--ingest", "http://127.0.0.1:8080", "--camera", "cam1"]
ENV = {"CCTV_SENDER_TOKEN": TOK1, "CCTV_SENDER_INSECURE": "true"}  # plain http:// here


# -- configuration ------------------------------------------------------------------------------
def test_config_flags_and_env(tmp_path: Path) -> None:
    cfg = load_config(BASE + ["--fps", "5", "--spool-mb", "2"], ENV)
    assert (cfg.camera, cfg.token, cfg.fps, cfg.spool_bytes) == ("cam1", TOK1, 5.0, 2_000_000)
    env = {"CCTV_SENDER_SOURCE": "rtsp://u:p@cam/stream", "CCTV_SENDER_INGEST": "http://i:8080/",
           "CCTV_SENDER_CAMERA": "gate", "CCTV_SENDER_TOKEN": "t", "CCTV_SENDER_FPS": "2.5",
           "CCTV_SENDER_LOOP": "yes", "CCTV_SENDER_STATE_DIR": str(tmp_path),
           "CCTV_SENDER_INSECURE": "1"}
    cfg = load_config([], env)
    assert cfg.source.kind == "rtsp" and cfg.ingest == "http://i:8080" and cfg.loop
    assert cfg.fps == 2.5 and cfg.state_dir == tmp_path
    # flags win over the environment
    assert load_config(["--fps", "7"], env).fps == 7.0
    # systemd's StateDirectory is the default state dir
    assert load_config([], {**env, "CCTV_SENDER_STATE_DIR": "",
                            "STATE_DIRECTORY": "/var/lib/cctv-sender"}).state_dir == \
        Path("/var/lib/cctv-sender")


def test_token_file(tmp_path: Path) -> None:
    tok = tmp_path / "token"
    tok.write_text("secret-token\n")
    assert load_config(BASE + ["--insecure", "--token-file", str(tok)], {}).token == \
        "secret-token"
    with pytest.raises(ConfigError, match="token file .*missing"):
        load_config(BASE + ["--token-file", str(tmp_path / "missing")], {})


@pytest.mark.parametrize(("argv", "env", "message"), [
    (BASE, {}, "no token"),
    (["--ingest", "http://h:1", "--camera", "c"], ENV, "no camera source"),
    (BASE[:2] + ["--camera", "c"], ENV, "no ingest URL"),
    (BASE[:4], ENV, "no camera name"),
    (BASE + ["--fps", "fast"], ENV, "--fps='fast' is not a number"),
    (BASE + ["--fps", "-1"], ENV, "must be at least 0"),
    (BASE + ["--size", "big"], ENV, "WIDTHxHEIGHT"),
    (BASE + ["--quality", "101"], ENV, "between 1 and 100"),
    (BASE + ["--bogus"], ENV, "unrecognized arguments"),
    (["--source", "ftp://cam/x", *BASE[2:]], ENV, "unknown scheme"),
    (["--source", "file:/x", "--ingest", "ftp://h", "--camera", "c"], ENV, "https://host:8080"),
    (["--source", "file:/x", "--ingest", "http://h:99999", "--camera", "c"], ENV, "bad port"),
    (BASE[:4] + ["--camera", "bad name!"], ENV, "must match"),
    (BASE, {**ENV, "CCTV_SENDER_FPSS": "3"}, "unknown variable CCTV_SENDER_FPSS"),
    (BASE, {**ENV, "CCTV_SENDER_LOOP": "maybe"}, "true or false"),
])
def test_config_errors_name_the_problem(argv: list[str], env: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(argv, env)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_plain_http_needs_insecure_and_tls_options_are_checked(tmp_path: Path) -> None:
    secure = ["--source", "file:/x.mp4", "--ingest", "https://h:8080", "--camera", "cam1"]
    token = {"CCTV_SENDER_TOKEN": "tok1"}
    with pytest.raises(ConfigError, match="plain HTTP.*--insecure"):
        load_config(BASE, token)
    assert load_config(BASE + ["--insecure"], token).insecure
    with pytest.raises(ConfigError, match="need an https:// ingest URL"):
        load_config(BASE + ["--insecure", "--pin-sha256", "ab" * 32], token)
    with pytest.raises(ConfigError, match="not a SHA-256 fingerprint"):
        load_config(secure + ["--pin-sha256", "abcd"], token)
    with pytest.raises(ConfigError, match="CA file .*No such file"):
        load_config(secure + ["--ca-file", str(tmp_path / "none.crt")], token)
    (tmp_path / "junk.crt").write_text("not a certificate")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        load_config(secure + ["--ca-file", str(tmp_path / "junk.crt")], token)
    # openssl's spelling of a fingerprint, from the environment
    pin = ":".join(["AB"] * 32)
    cfg = load_config(secure, {**token, "CCTV_SENDER_PIN_SHA256": pin})
    assert cfg.pin_sha256 == "ab" * 32 and cfg.tls.pin_sha256 == "ab" * 32


def test_other_cctv_variables_are_ignored() -> None:
    # CCTV_* without the SENDER_ prefix belong to the services
    assert load_config(BASE, {**ENV, "CCTV_REDIS_URL": "whatever"}).camera == "cam1"


# -- source strings -----------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "kind", "target", "options"), [
    ("picamera2:", "picamera2", 0, {}),
    ("picamera2", "picamera2", 0, {}),
    ("picamera2:1?size=1280x720&fps=15&mode=1", "picamera2", 1,
     {"size": "1280x720", "fps": "15", "mode": "1"}),
    ("v4l2:/dev/video0", "v4l2", "/dev/video0", {}),
    ("v4l2:2?fourcc=YUYV", "v4l2", 2, {"fourcc": "YUYV"}),
    ("/dev/video1", "v4l2", "/dev/video1", {}),
    ("0", "v4l2", 0, {}),
    ("rtsp://user:pw@10.0.0.5:554/h264?channel=1", "rtsp",
     "rtsp://user:pw@10.0.0.5:554/h264?channel=1", {}),
    ("http://cam:8080/?action=stream", "http", "http://cam:8080/?action=stream", {}),
    ("file:/data/clip.mp4?fps=5&loop=1", "file", "/data/clip.mp4", {"fps": "5", "loop": "1"}),
    ("file:///data/clip.mp4", "file", "/data/clip.mp4", {}),
    ("/data/clip.mp4", "file", "/data/clip.mp4", {}),
])
def test_parse_source(raw: str, kind: str, target: object, options: dict) -> None:
    spec = parse_source(raw)
    assert (spec.kind, spec.target, spec.options) == (kind, target, options)


def test_source_display_hides_passwords() -> None:
    assert "pw" not in parse_source("rtsp://user:pw@cam/s").display
    assert redact("http://u:secret@cam:81/x?y=1") == "http://u:***@cam:81/x?y=1"
    assert redact("http://cam/x") == "http://cam/x"


@pytest.mark.parametrize("raw", ["", "picamera2:abc", "v4l2:", "gopher://x", "rtsp://"])
def test_bad_sources(raw: str) -> None:
    with pytest.raises(SourceConfigError):
        parse_source(raw)


# -- state: sequence numbers --------------------------------------------------------------------
def test_sequence_survives_restarts_and_crashes(tmp_path: Path) -> None:
    path = tmp_path / "seq"
    a = SequenceCounter(path, block=10).load()
    first = [a.next() for _ in range(15)]
    assert first == list(range(first[0], first[0] + 15))
    # a clean or unclean restart never hands out a number twice
    b = SequenceCounter(path, block=10).load()
    second = [b.next() for _ in range(3)]
    assert min(second) > max(first)
    assert second[0] - max(first) <= 10  # at most one block skipped


def test_fresh_sequence_starts_at_the_clock(tmp_path: Path) -> None:
    import time
    seq = SequenceCounter(tmp_path / "seq").load().next()
    assert abs(seq - time.time_ns() // 1000) < 60_000_000


def test_damaged_sequence_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "seq").write_text("garbage")
    with pytest.raises(StateError, match="damaged"):
        SequenceCounter(tmp_path / "seq").load()


def test_state_dir_is_exclusive(tmp_path: Path) -> None:
    first = StateDir(tmp_path, "cam1").open()
    try:
        with pytest.raises(StateError, match="in use by another cctv-sender"):
            StateDir(tmp_path, "cam1").open()
        StateDir(tmp_path, "cam2").open().close()  # other cameras are independent
    finally:
        first.close()
    StateDir(tmp_path, "cam1").open().close()


# -- spool --------------------------------------------------------------------------------------
def _frame(seq: int, size: int = 1000) -> Frame:
    return Frame(jpeg=b"\xff\xd8" + bytes(size - 4) + b"\xff\xd9", ts_us=1_000_000 + seq, seq=seq)


def test_spool_evicts_oldest_over_the_cap(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", cap_bytes=5000).open()
    evicted = sum(spool.add(_frame(i)) for i in range(8))
    assert evicted == 3 and spool.evicted == 3
    assert len(spool) == 5 and spool.bytes == 5000
    assert spool.peek().seq == 3
    assert len(list((tmp_path / "spool").iterdir())) == 5


def test_spool_is_oldest_first_and_survives_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", cap_bytes=100_000).open()
    for i in (5, 6, 2, 7):
        spool.add(_frame(i))
    first = spool.peek()
    assert first.seq == 2 and first.late and first.ts_us == 1_000_002
    spool.remove(2)
    (tmp_path / "spool" / "junk.tmp").write_bytes(b"half")
    # what a power cut can leave: an empty file, a frame cut short
    (tmp_path / "spool" / f"{1:020d}_5.jpg").write_bytes(b"")
    (tmp_path / "spool" / f"{3:020d}_5.jpg").write_bytes(_frame(3).jpeg[:500])
    again = Spool(tmp_path / "spool", cap_bytes=100_000).open()
    assert [again.peek().seq, len(again), again.bytes] == [5, 3, 3000]
    assert not (tmp_path / "spool" / "junk.tmp").exists()
    assert sorted(p.name[:20] for p in (tmp_path / "spool").glob("*.jpg")) == \
        [f"{i:020d}" for i in (5, 6, 7)]
    # a smaller cap after restart evicts at start
    small = Spool(tmp_path / "spool", cap_bytes=1500).open()
    assert len(small) == 1 and small.evicted == 2 and small.peek().seq == 7


def test_spool_off_or_frame_too_big_counts_as_evicted(tmp_path: Path) -> None:
    assert Spool(tmp_path / "a", 0).open().add(_frame(1)) == 1
    spool = Spool(tmp_path / "b", 500).open()
    assert spool.add(_frame(1, 1000)) == 1 and len(spool) == 0


# -- live queue, backoff, rate gate, jpeg -------------------------------------------------------
def test_live_queue_newest_wins() -> None:
    q = LiveQueue(3)
    dropped = [q.put(_frame(i)) for i in range(5)]
    assert [d.seq if d else None for d in dropped] == [None, None, None, 0, 1]
    assert q.dropped == 2
    assert [q.get(0).seq for _ in range(3)] == [2, 3, 4]
    assert q.get(0.01) is None


def test_backoff_grows_with_jitter_and_caps() -> None:
    b = Backoff(0.5, 8.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(10)]
    assert 0.25 <= delays[0] <= 0.5
    assert all(4.0 <= d <= 8.0 for d in delays[5:])
    assert len(set(delays)) == 10
    b.reset()
    assert b.next_delay() <= 0.5


def test_rate_gate_keeps_the_rate_despite_jitter() -> None:
    gate = RateGate(10.0)
    rng = random.Random(2)
    t, passed = 0.0, 0
    for _ in range(300):  # a 30 fps camera with +-5 ms jitter for 10 s
        t += 1 / 30 + rng.uniform(-0.005, 0.005)
        passed += gate.take(t)
    assert 98 <= passed <= 102
    assert all(RateGate(0).take(x) for x in range(5))


def test_jpeg_size(jpegs: list[bytes]) -> None:
    assert jpeg_size(jpegs[0]) == (320, 240)
    assert jpeg_size(b"not a jpeg") is None
