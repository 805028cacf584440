"""H.264 for thin links: the Pi serves its camera over RTSP (picamera2's H264Encoder) and a
real RTSP client (FFmpeg through OpenCV, as the cluster's puller uses) decodes it."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_sender_sources import needs_ffmpeg

from cctv_sender.rtsp_server import packetize, split_nals
from cctv_sender.sources import build_source, parse_source

from sender_support import CLIP_480, SenderProc, standin_calls, standin_env
from support import free_port

BITS, BLOCK = 12, 40


def encode_numbered_h264(clip: Path, out: Path, seconds: float, size: str = "640x480",
                         bitrate: str = "") -> Path:
    """``clip`` as an H.264 Annex-B file with access unit delimiters and SPS/PPS at every
    keyframe (as the Pi's encoder with repeat=True), each frame's number drawn in its top
    band as BITS black/white blocks."""
    lum = (f"if(lt(Y,{BLOCK}),if(mod(floor(N/pow(2,floor(X/{BLOCK}))),2),235,16),lum(X,Y))")
    chroma = f"if(lt(Y,{BLOCK // 2}),128,cb(X,Y))"
    rate = ["-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate] if bitrate else \
        ["-crf", "23"]
    cmd = [shutil.which("ffmpeg") or "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
           "-i", str(clip), "-t", str(seconds), "-an", "-vf",
           f"scale={size.replace('x', ':')},geq=lum='{lum}':cb='{chroma}':"
           f"cr='{chroma.replace('cb', 'cr')}'",
           "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30",
           *rate, "-x264-params", "aud=1:repeat-headers=1", "-pix_fmt", "yuv420p",
           "-f", "h264", str(out)]
    subprocess.run(cmd, check=True, timeout=300)
    return out


def frame_number(img: np.ndarray) -> int:
    """The number encode_numbered_h264 drew into a decoded frame."""
    row = img[BLOCK // 2, :, :].mean(axis=1)
    return sum(1 << i for i in range(BITS) if row[i * BLOCK + BLOCK // 2] > 128)


@pytest.fixture(scope="module")
def h264_file(tmp_path_factory) -> Path:
    if not shutil.which("ffmpeg"):
        pytest.fail("ffmpeg with libx264 is needed (apt install ffmpeg)")
    return encode_numbered_h264(CLIP_480, tmp_path_factory.mktemp("h264") / "clip.h264", 3)


def test_packetize_fragments_big_nals_and_marks_the_last_packet() -> None:
    sps, pps = b"\x67\x42\xc0\x1f\xda\x01\x40\x16\xec\x04\x40", b"\x68\xce\x3c\x80"
    idr = b"\x65" + bytes(range(256)) * 20
    au = b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01" + pps + b"\x00\x00\x00\x01" + idr
    nals = split_nals(au)
    assert nals == [sps, pps, idr]
    packets, nxt = packetize(nals, 65534, 90_000, 0x1234)
    assert nxt == 65534 + len(packets)
    assert [p[1] & 0x80 for p in packets].count(0x80) == 1 and packets[-1][1] & 0x80
    assert all(len(p) <= 12 + 1400 for p in packets)
    assert packets[0][12:] == sps and packets[1][12:] == pps
    frags = packets[2:]
    assert all(p[12] & 0x1F == 28 for p in frags)
    assert frags[0][13] & 0x80 and frags[-1][13] & 0x40
    header = bytes([(frags[0][12] & 0xE0) | (frags[0][13] & 0x1F)])
    assert header + b"".join(p[14:] for p in frags) == idr
    assert int.from_bytes(packets[3][2:4], "big") == 65537 & 0xFFFF  # sequence wraps


@needs_ffmpeg
@pytest.mark.parametrize(("board", "report"), [("pi4", "hardware H.264"),
                                               ("pi5", "software H.264 (libav libx264)")])
def test_pi_serves_h264_over_rtsp_and_a_real_client_decodes_it(
        tmp_path: Path, h264_file: Path, board: str, report: str) -> None:
    port = free_port()
    env = standin_env(tmp_path, STANDIN_PICAMERA2_H264=str(h264_file),
                      STANDIN_PICAMERA2_BOARD=board)
    s = SenderProc(["--serve-rtsp", f"127.0.0.1:{port}", "--source",
                    "picamera2:?size=640x480", "--fps", "30", "--camera", "frontdoor"],
                   tmp_path / "state", tmp_path, env=env)
    try:
        deadline = time.monotonic() + 20
        while report not in s.log():
            assert time.monotonic() < deadline and s.proc.poll() is None, s.log()
            time.sleep(0.1)
        src = build_source(parse_source(f"rtsp://127.0.0.1:{port}/frontdoor"), timeout_s=10)
        numbers = []
        with src:
            for _ in range(30):
                src.grab()
                img = cv2.imdecode(np.frombuffer(src.retrieve(), np.uint8), cv2.IMREAD_COLOR)
                assert img.shape[:2] == (480, 640)
                numbers.append(frame_number(img))
        steps = [b - a for a, b in zip(numbers, numbers[1:], strict=False)]
        assert sum(1 for d in steps if d == 1) >= 20, numbers  # consecutive frames, in order
    finally:
        assert s.stop() == 0, s.log()
    calls = standin_calls(tmp_path / "picamera2.jsonl")
    enc = next(c for c in calls if c["event"] == "start_encoder")
    assert enc["encoder"] == ("H264Encoder" if board == "pi4" else "LibavH264Encoder")
    assert "rtsp://<host>:" in s.log() and "/frontdoor" in s.log()


def test_serve_rtsp_needs_the_pi_camera(tmp_path: Path) -> None:
    s = SenderProc(["--serve-rtsp", "127.0.0.1:1", "--source", "file:/x.mp4"],
                   tmp_path / "state", tmp_path)
    assert s.wait(30) == 2
    assert "--serve-rtsp serves the Pi camera" in s.log()
