"""CCTV_CLASSES: people, vehicles and animals by default (the sample street's benches are left
out), every class with ``all``, exactly the named ones otherwise; names are checked against the
real model's, and a bad value stops the replica at start with a clear line."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import cv2
import numpy as np
import pytest

from cctv.inference.classes import CCTV_CLASSES, ClassesError, class_filter
from cctv.inference.detector import Detection, load_detector
from cctv.settings import SettingsError, load_settings

from support import MODEL_OPENVINO, clip_jpegs, free_port, service_env


@pytest.fixture(scope="module")
def street() -> tuple[dict[int, str], list[list[Detection]]]:
    """The real model's class names and its detections on frames of the sample clip."""
    det = load_detector(str(MODEL_OPENVINO))
    frames = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)
              for j in clip_jpegs(n=20, step=10)]
    return det.names, [det.detect([f])[0] for f in frames]


def _names(dets: list[list[Detection]]) -> Counter:
    return Counter(d.name for frame in dets for d in frame)


def test_the_default_keeps_people_vehicles_and_animals_and_drops_the_benches(street) -> None:
    names, dets = street
    seen = _names(dets)
    assert seen["bench"] and seen["car"] and seen["person"], seen  # what the street holds
    default = class_filter("cctv", names)
    kept = _names([default.keep(d) for d in dets])
    assert kept == Counter({n: c for n, c in seen.items() if n in CCTV_CLASSES}), kept
    assert "bench" not in kept and kept["car"] == seen["car"]
    assert "18 of 80 classes" in default.why
    assert _names([class_filter("all", names).keep(d) for d in dets]) == seen


def test_named_classes_and_ids_keep_exactly_those(street) -> None:
    names, dets = street
    assert set(_names([class_filter("person", names).keep(d) for d in dets])) == {"person"}
    assert set(_names([class_filter("2,13", names).keep(d) for d in dets])) == {"car", "bench"}
    assert class_filter("Traffic Light", names).ids == frozenset({9})


@pytest.mark.parametrize("raw, why", [
    ("person,cars", "the model has no class 'cars'; it knows: airplane, apple"),
    ("person,80", "class id 80: the model has ids 0..79"),
])
def test_a_class_the_model_does_not_have_is_refused(street, raw: str, why: str) -> None:
    with pytest.raises(ClassesError, match=why):
        class_filter(raw, street[0])


def test_a_model_without_the_default_classes_keeps_all_of_its_own() -> None:
    custom = {0: "forklift", 1: "pallet"}
    assert class_filter("cctv", custom).ids is None
    assert class_filter("pallet", custom).ids == frozenset({1})
    assert class_filter("cctv", None).ids is None  # a backend that does not name its classes
    with pytest.raises(ClassesError, match="give class ids"):
        class_filter("person", None)


@pytest.mark.parametrize("raw", ["person;car", "person,,car", "*", "a" * 41])
def test_a_malformed_value_is_refused_by_the_settings(raw: str) -> None:
    with pytest.raises(SettingsError, match="CCTV_CLASSES"):
        load_settings({"CCTV_CLASSES": raw})


def test_the_replica_stops_at_start_naming_the_unknown_class(tmp_path) -> None:
    env = service_env("redis://127.0.0.1:1/0", model=MODEL_OPENVINO, classes="person,unicorn",
                      inference_http_bind=f"127.0.0.1:{free_port()}")
    out = subprocess.run([sys.executable, "-m", "cctv", "inference", "--id", "x"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "CCTV_CLASSES=person,unicorn: the model has no class 'unicorn'" in out.stderr, \
        out.stderr[-2000:]
