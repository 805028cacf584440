"""Rotating a camera's token while its sender streams: ``cctv cameras rotate-token``, the new
token written to the sender's token file, and not one frame refused or lost; the old token
stops working once the camera sent with the new one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from cctv.core.registry import Registry, token_digest

from sender_support import CLIP_480, SenderProc, make_jpeg, sender_env, stream_seqs, wait_for
from support import post_frame, service_env

FPS = 20
FRAMES = 300
OLD = "tok1-16charsfortests"


def write_token(path: Path, token: str) -> None:
    """Replace the token file in one step, as an editor or config tool would."""
    tmp = path.with_suffix(".new")
    tmp.write_text(token + "\n", encoding="utf-8")
    os.replace(tmp, path)


def test_rotating_the_token_of_a_streaming_camera_loses_nothing(
        ingest, redis_server, rdb, tmp_path: Path) -> None:
    ing = ingest(camera_fps_limit=100, frames_maxlen=5000)
    token_file = tmp_path / "cam1.token"
    write_token(token_file, OLD)
    s = SenderProc(["--ingest", ing.url, "--camera", "cam1", "--source", str(CLIP_480),
                    "--loop", "--fps", str(FPS), "--max-frames", str(FRAMES),
                    "--token-file", str(token_file)], tmp_path / "state", tmp_path,
                   env=sender_env())
    wait_for(lambda: rdb.xlen("cctv:frames:cam1") >= 60, 30, "frames with the old token")

    out = subprocess.run([sys.executable, "-m", "cctv", "cameras", "rotate-token", "cam1"],
                         env=service_env(redis_server.url), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    new = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("token:"))
    reg = Registry(rdb)
    assert len(reg.get("cam1").tokens) == 2
    at_rotation = rdb.xlen("cctv:frames:cam1")
    wait_for(lambda: rdb.xlen("cctv:frames:cam1") >= at_rotation + 20, 30,
             "frames with both tokens valid")
    write_token(token_file, new)
    # the first frame sent with the new token retires the old one
    wait_for(lambda: reg.get("cam1").tokens == (token_digest(new),), 15,
             "the old token retired", logs=[s.log])
    assert s.wait(90) == 0, s.log()

    stats = s.stats()
    assert stats["rejected"] == 0, stats
    seqs = [seq for seq, _late in stream_seqs(rdb, "cam1")]
    assert len(seqs) == len(set(seqs)) == FRAMES, "frames lost or doubled during the rotation"
    assert stats["delivered"] == FRAMES, stats
    assert "sending with the new token" in s.log()
    # the old token no longer opens the camera, the new one does
    with requests.Session() as http:
        assert post_frame(http, ing.url, "cam1", OLD, make_jpeg(1), max(seqs) + 1).status_code \
            == 403
        assert post_frame(http, ing.url, "cam1", new, make_jpeg(2), max(seqs) + 2).status_code \
            == 202


def test_a_redis_that_lost_the_registry_still_takes_the_secret_cameras(ingest, rdb) -> None:
    """Redis restarted without its data: the cameras of CCTV_CAMERAS keep sending (their
    token still opens them) and ingest writes them into the registry again by itself."""
    ing = ingest()
    with requests.Session() as http:
        assert post_frame(http, ing.url, "cam1", OLD, make_jpeg(1), 1).status_code == 202
        rdb.flushall()
        assert post_frame(http, ing.url, "cam1", OLD, make_jpeg(2), 2).status_code == 202
        seq = iter(range(3, 1000))

        def seeded() -> bool:  # the camera keeps sending meanwhile
            assert post_frame(http, ing.url, "cam1", OLD, make_jpeg(2), next(seq)).status_code \
                == 202
            return Registry(rdb).get("cam1") is not None

        wait_for(seeded, 10, "the registry seeded again", poll_s=0.2)
        assert Registry(rdb).get("cam1").tokens == (token_digest(OLD),)
        # a removed camera is not brought back that way
        Registry(rdb).remove("cam2")
        assert post_frame(http, ing.url, "cam2", "tok2-16charsfortests", make_jpeg(3),
                          5000).status_code == 403


def test_a_changed_secret_token_works_from_the_first_frame_after_a_restart(ingest, rdb) -> None:
    """A camera seeded from CCTV_CAMERAS follows the secret: after ingest restarts with a new
    token there, the very first frame with it is accepted (a sender's spool is not refused)."""
    new = "tok1-changed-in-the-secret"
    first = ingest()
    with requests.Session() as http:
        assert post_frame(http, first.url, "cam1", OLD, make_jpeg(1), 1).status_code == 202
    first.stop()
    second = ingest(cameras=f"cam1:{new}")
    with requests.Session() as http:
        assert post_frame(http, second.url, "cam1", new, make_jpeg(2), 2).status_code == 202
        assert post_frame(http, second.url, "cam1", OLD, make_jpeg(3), 3).status_code == 403
    assert Registry(rdb).get("cam1").tokens == (token_digest(new),)
