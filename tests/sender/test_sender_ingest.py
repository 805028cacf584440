"""The sender as a process against a real ingest and redis-server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from sender_support import CLIP_480, SenderProc, sender_env, stream_seqs, wait_for

ENV = sender_env(CCTV_SENDER_TOKEN="tok1-16charsfortests")


def _args(ingest_url: str, *extra: str, camera: str = "cam1") -> list[str]:
    return ["--ingest", ingest_url, "--camera", camera, *extra]


def test_file_source_ships_numbered_frames_and_counts_on_after_restart(
        ingest, rdb, tmp_path: Path) -> None:
    ing = ingest()
    state = tmp_path / "state"
    before_us = time.time_ns() // 1000
    s = SenderProc(_args(ing.url, "--source", f"file:{CLIP_480}", "--fps", "20",
                         "--max-frames", "12"), state, tmp_path, env=ENV)
    assert s.wait(30) == 0, s.log()
    stats = s.stats()
    got = stream_seqs(rdb, "cam1")
    first = stats["first_seq"]
    assert [seq for seq, _late in got] == list(range(first, first + 12))
    assert not any(late for _seq, late in got)
    assert stats["captured"] == stats["delivered"] == 12
    assert (stats["dropped"], stats["evicted"], stats["rejected"]) == (0, 0, 0)
    _id, fields = rdb.xrange("cctv:frames:cam1", count=1)[0]
    assert (int(fields[b"w"]), int(fields[b"h"])) == (640, 480)
    assert before_us <= int(fields[b"ts"]) <= time.time_ns() // 1000
    # the file is paced at its own 30 fps and the limit keeps 20 of them a second
    last_ts = int(rdb.xrevrange("cctv:frames:cam1", count=1)[0][1][b"ts"])
    assert 0.5 < (last_ts - int(fields[b"ts"])) / 1e6 < 1.5
    assert rdb.hget("cctv:stats:cam1", "accepted") == b"12"

    s2 = SenderProc(_args(ing.url, "--source", f"file:{CLIP_480}", "--fps", "0",
                          "--max-frames", "3"), state, tmp_path, name="sender2", env=ENV)
    assert s2.wait(30) == 0, s2.log()
    seqs = [seq for seq, _late in stream_seqs(rdb, "cam1")]
    assert len(seqs) == 15 and len(set(seqs)) == 15
    assert min(seqs[12:]) > max(seqs[:12])  # the count went on across the restart


def test_sigterm_stops_cleanly(ingest, rdb, tmp_path: Path) -> None:
    ing = ingest()
    s = SenderProc(_args(ing.url, "--source", str(CLIP_480), "--loop", "--fps", "10"),
                   tmp_path / "state", tmp_path, env=ENV)
    wait_for(lambda: rdb.xlen("cctv:frames:cam1") >= 3, 20, "frames at ingest")
    started = time.monotonic()
    assert s.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5
    log = s.log()
    assert "got SIGTERM, stopping" in log and "Traceback" not in log
    stats = s.stats()
    # every frame captured was sent (or spooled for next time); nothing vanished
    assert stats["captured"] == stats["delivered"] + stats["spool_frames"] + stats["dropped"]
    s2 = SenderProc(_args(ing.url, "--source", str(CLIP_480), "--loop"), tmp_path / "state",
                    tmp_path, name="sigint", env=ENV)
    wait_for(lambda: "streaming" in s2.log(), 20, "second sender streaming")
    assert s2.stop(signal.SIGINT) == 0


def test_config_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    cases = [
        ([], sender_env(), "no camera source given"),
        (["--source", "file:/nonexistent.mp4", "--ingest", "http://127.0.0.1:9", "--camera",
          "cam1"], ENV, "does not exist"),
        (["--source", str(CLIP_480), "--ingest", "http://127.0.0.1:9", "--camera", "cam1"],
         sender_env(), "no token"),
        (["--source", "rtsp://", "--ingest", "http://127.0.0.1:9", "--camera", "c"], ENV,
         "RTSP URL has no host"),
    ]
    for args, env, message in cases:
        out = subprocess.run([sys.executable, "-m", "cctv_sender", "--state-dir",
                              str(tmp_path), *args], env=env, capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 2, out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], out.stderr
        assert lines[0].startswith("cctv-sender: error: ")


def test_wrong_token_is_rejected_once_per_frame_not_retried(ingest, rdb, tmp_path: Path) -> None:
    ing = ingest()
    s = SenderProc(_args(ing.url, "--source", f"file:{CLIP_480}?fps=0", "--fps", "0",
                         "--max-frames", "5"), tmp_path / "state", tmp_path,
                   env=sender_env(CCTV_SENDER_TOKEN="wrong"))
    assert s.wait(30) == 0, s.log()
    stats = s.stats()
    assert (stats["rejected"], stats["retries"], stats["delivered"]) == (5, 0, 0)
    assert stats["spool_frames"] == 0
    assert "ingest replied 403" in s.log()
    assert rdb.xlen("cctv:frames:cam1") == 0


def test_rate_limited_frames_are_retried_and_delivered_once(ingest, rdb, tmp_path: Path) -> None:
    # a queue for the whole burst: a slow first POST on a loaded machine must not drop frames
    ing = ingest(camera_fps_limit=5)
    s = SenderProc(_args(ing.url, "--source", f"file:{CLIP_480}?fps=30", "--fps", "0",
                         "--max-frames", "14", "--spool-rate", "3", "--queue", "32"),
                   tmp_path / "state",
                   tmp_path, env=ENV)
    assert s.wait(60) == 0, s.log()
    stats = s.stats()
    seqs = [seq for seq, _late in stream_seqs(rdb, "cam1")]
    first = stats["first_seq"]
    assert sorted(seqs) == list(range(first, first + 14))
    assert stats["retries"] > 0 and stats["late"] > 0
    assert stats["delivered"] == 14 and stats["evicted"] == 0
    assert "429" in s.log()
