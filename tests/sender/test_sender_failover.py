"""A sender given several ingest URLs (one per node) keeps delivering when the ingest it uses is
killed: the next frame goes to the other one at once, nothing waits for the dead one to return,
and every frame arrives exactly once (ingest de-duplicates in the Redis they share)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cctv_sender.config import ConfigError, load_config

from sender_support import CLIP_480, SenderProc, sender_env, stream_seqs, wait_for

FPS = 20
FRAMES = 400


def test_killing_the_ingest_in_use_moves_frames_to_the_next_one_and_back(
        ingest, rdb, tmp_path: Path) -> None:
    a = ingest(camera_fps_limit=100, frames_maxlen=5000)
    b = ingest(camera_fps_limit=100, frames_maxlen=5000)
    state = tmp_path / "state"
    s = SenderProc(["--ingest", f"{a.url},{b.url}", "--camera", "cam1", "--source",
                    str(CLIP_480), "--loop", "--fps", str(FPS), "--max-frames", str(FRAMES),
                    "--reconnect-max", "2"], state, tmp_path,
                   env=sender_env(CCTV_SENDER_TOKEN="tok1-16charsfortests"))
    frames = lambda: rdb.xlen("cctv:frames:cam1")  # noqa: E731
    wait_for(lambda: frames() >= 40, 30, "frames through the first ingest")
    a.kill()
    at_kill = frames()
    # while the first ingest is down, frames keep arriving through the second
    wait_for(lambda: frames() >= at_kill + 40, 30, "frames through the second ingest")
    assert "frames go to " + b.url in s.log(), s.log()
    a.start()
    b.kill()
    at_kill = frames()
    wait_for(lambda: frames() >= at_kill + 40, 30, "frames through the first ingest again")
    assert s.wait(90) == 0, s.log()
    assert s.log().count("): frames go to http") == 2, s.log()
    stats = s.stats()
    seqs = [seq for seq, _late in stream_seqs(rdb, "cam1")]
    first = stats["first_seq"]
    assert len(seqs) == len(set(seqs)), "a frame was stored twice"
    assert sorted(seqs) == list(range(first, first + FRAMES)), "a frame is missing"
    assert (stats["dropped"], stats["evicted"], stats["rejected"]) == (0, 0, 0)
    # frames went on to the other ingest: only the few in flight at each kill waited
    assert stats["late"] <= 2 * FPS, stats


@pytest.mark.parametrize("ingest_urls, why", [
    ("https://a:8080,https://a:8080", "given twice"),
    ("https://a:8080,http://b:8080", "all https:// or all http://"),
    ("https://a:8080,ftp://b", "must look like https://host:8080"),
    ("https://a:8080,https://b:x", "has a bad port"),
])
def test_several_ingest_urls_are_checked(ingest_urls: str, why: str) -> None:
    env = {"CCTV_SENDER_TOKEN": "tok1-16charsfortests", "CCTV_SENDER_INSECURE": "true"}
    with pytest.raises(ConfigError, match=why):
        load_config(["--ingest", ingest_urls, "--camera", "cam1", "--source", "file:/x.mp4"],
                    env)


def test_the_urls_are_kept_in_order() -> None:
    env = {"CCTV_SENDER_TOKEN": "tok1-16charsfortests"}
    cfg = load_config(["--ingest", "https://a:8080/, https://b:8080", "--camera", "cam1",
                       "--source", "file:/x.mp4"], env)
    assert cfg.ingest_urls == ("https://a:8080", "https://b:8080")

