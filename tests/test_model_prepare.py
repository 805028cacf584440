"""``cctv model prepare``: a real export of the test weights, loaded by the service's loader."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from cctv.inference.detector import load_detector

from support import ROOT


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "services"))
    return subprocess.run([sys.executable, "-m", "cctv", "model", "prepare", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


def test_prepare_exports_openvino_that_detects_like_the_weights(shared_dir: Path,
                                                                tmp_path: Path) -> None:
    weights = shared_dir / "models" / "yolov8n_int8recon.pt"
    bus = shared_dir / "media" / "bus.jpg"
    out = tmp_path / "models"
    done = _run(str(weights), "--imgsz", "320", "--out", str(out), "--sample", str(bus),
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.strip().split("=", 1) for line in done.stdout.splitlines()
                 if line.strip().startswith("CCTV_"))
    model = Path(lines["CCTV_MODEL"])
    assert lines["CCTV_IMGSZ"] == "320"
    assert model.parent == out.resolve() and list(model.glob("*.xml")), done.stdout
    assert "one frame:" in done.stdout and "the .pt:" in done.stdout
    # the shared weights folder is left as it was: the export worked on a copy
    assert not list(weights.parent.glob("yolov8n_int8recon_openvino_model*"))
    assert not list(out.glob(".cctv-prepare-*"))

    frame = cv2.imread(str(bus))
    prepared = load_detector(str(model), device="cpu", imgsz=320)
    original = load_detector(str(weights), device="cpu", imgsz=320)
    assert prepared.backend == "openvino"
    got = {d.name for d in prepared.detect([frame])[0]}
    want = {d.name for d in original.detect([frame])[0]}
    assert {"person", "bus"} <= want
    assert {"person", "bus"} <= got


@pytest.mark.parametrize(("args", "message"), [
    (["missing.pt"], "no such file"),
    (["weights.pt", "--imgsz", "300"], "multiple of 32"),
    (["notes.txt"], "expected YOLO weights ending in .pt"),
    (["broken.pt"], "export to OpenVINO model folder failed"),
])
def test_prepare_refuses_with_one_clear_line(tmp_path: Path, args: list[str],
                                             message: str) -> None:
    (tmp_path / "weights.pt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "broken.pt").write_bytes(os.urandom(4096))
    done = _run(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("cctv model prepare: ") and message in last, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
