"""One model call for several cameras' frames (CCTV_INFERENCE_BATCH) gives each frame the
detections it gets alone, in order, through the OpenVINO backend; odd chunk sizes and a
single frame take the one-frame path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cctv.inference.detector import load_detector

from support import MODEL_OPENVINO, clip_jpegs


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)
            for j in clip_jpegs(n=5, step=20)]


def _same(a, b) -> None:
    assert len(a) == len(b), (a, b)
    for x, y in zip(a, b, strict=True):
        assert x.cls == y.cls and abs(x.conf - y.conf) < 0.02, (x, y)
        assert max(abs(p - q) for p, q in zip(x.xyxy, y.xyxy, strict=True)) <= 3, (x, y)


def test_a_batch_gives_each_frame_its_own_detections(frames) -> None:
    single = load_detector(str(MODEL_OPENVINO), backend="openvino")
    batched = load_detector(str(MODEL_OPENVINO), backend="openvino", batch=4)
    alone = [single.detect([f])[0] for f in frames]
    assert sum(map(len, alone)) > 5, "the sample frames should hold detections"
    together = batched.detect(frames)  # a chunk of 4, then one frame alone
    assert len(together) == len(frames)
    for a, b in zip(alone, together, strict=True):
        _same(a, b)
    # prepared frames (the leader's prefetch) take the same path
    prepared = [batched.prepare(f) for f in frames[:3]]
    for a, b in zip(alone[:3], batched.detect(prepared), strict=True):
        _same(a, b)
    assert batched.detect([frames[0]])[0] == single.detect([frames[0]])[0]


def test_the_batch_setting_is_checked() -> None:
    from cctv.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="INFERENCE_BATCH"):
        load_settings({"CCTV_INFERENCE_BATCH": "0"})
