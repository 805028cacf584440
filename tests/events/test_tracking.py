"""The tracker (cctv.inference.bytetrack, numpy + lap): ids across a saved state and a gap, the
saved state refusing anything it did not write, the same ids as ultralytics' ByteTrack and
BoT-SORT on the real clip, and tracking on the real clip with torch made unimportable (as in the
lean CPU image), using only what that image installs."""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from events_support import NOT_IN_CPU_IMAGE, track_stats, without_torch

from cctv.inference import trackstate
from cctv.inference.bytetrack import ByteTracker
from cctv.inference.detector import Detection
from cctv.inference.tracking import CameraTracker, Tracking

from support import CLIP, MODEL_OPENVINO, ROOT, Boxes, service_env


def camera_tracker(kind: str = "bytetrack") -> CameraTracker:
    return CameraTracker("cam", ByteTracker(kind, 30))


def _moving(track_ids_from, frames: range, gap_at: int | None = None):
    """Two cars moving right 8 px per frame; returns the track ids per frame."""
    out = []
    for i in frames:
        if gap_at is not None and gap_at <= i < gap_at + 10:
            continue  # frames the leader never saw (a take-over)
        dets = [Detection(2, "car", 0.9, (40 + 8 * i, 100, 120 + 8 * i, 150)),
                Detection(2, "car", 0.85, (400 - 6 * i, 300, 470 - 6 * i, 350))]
        out.append([d.track for d in track_ids_from(dets, i)])
    return out


@pytest.mark.parametrize("kind", ["bytetrack", "botsort"])
def test_tracker_keeps_ids_across_a_saved_state_and_a_gap(kind: str) -> None:
    a = camera_tracker(kind)
    first = _moving(lambda dets, i: a.update(dets, i * 100_000, None), range(0, 20))
    ids = first[-1]
    assert None not in ids and len(set(ids)) == 2
    blob = a.dumps()
    assert len(blob) < 20_000
    # a new leader: a fresh tracker with the saved state, and a one-second gap in the frames
    b = camera_tracker(kind)
    b.load_state(blob)
    after = _moving(lambda dets, i: b.update(dets, i * 100_000, None), range(20, 40), gap_at=20)
    assert after[0] == ids, "the same objects keep their ids after the take-over and the gap"
    assert after[-1] == ids
    # new objects get new ids, never reused ones, also past ids the saved state did not know
    b.ids_after(50)
    b.update([Detection(0, "person", 0.9, (10, 400, 30, 460))], 41 * 100_000, None)
    new = b.update([Detection(0, "person", 0.9, (11, 400, 31, 460))], 42 * 100_000, None)
    assert new[0].track == 51


def test_a_restored_tracker_continues_exactly_like_the_original() -> None:
    a = camera_tracker()
    _moving(lambda dets, i: a.update(dets, i * 100_000, None), range(0, 15))
    b = camera_tracker()
    b.load_state(a.dumps())
    assert b.dumps() == a.dumps()
    for t in (a, b):
        t.trace = _moving(lambda dets, i, t=t: t.update(dets, i * 100_000, None), range(15, 60))
    assert a.trace == b.trace and a.dumps() == b.dumps()


# ---- the saved state refuses what it did not write --------------------------------------------
def _valid() -> bytes:
    t = camera_tracker()
    _moving(lambda dets, i: t.update(dets, i * 100_000, None), range(0, 6))
    return t.dumps()


def _edit_header(blob: bytes, edit) -> bytes:
    magic, version, n = struct.unpack_from("<7sBI", blob)
    header = json.loads(blob[12:12 + n])
    edit(header)
    head = json.dumps(header).encode()
    return struct.pack("<7sBI", magic, version, len(head)) + head + blob[12 + n:]


def _edit_floats(blob: bytes, edit) -> bytes:
    n = struct.unpack_from("<7sBI", blob)[2]
    floats = np.frombuffer(blob[12 + n:], "<f8").copy().reshape(-1, 72)
    edit(floats)
    return blob[:12 + n] + floats.tobytes()


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {Path(os.environ.get('TMPDIR', '/tmp')) / 'pwned'}",))


def _set(key, value):
    return lambda h: h.__setitem__(key, value)


def _track(field: int, value):
    return lambda h: h["tracks"][0].__setitem__(field, value)


BAD = {
    "empty": (lambda b: b"", "format"),
    "garbage": (lambda b: os.urandom(300), "format"),
    "an old pickle": (lambda b: pickle.dumps({"v": 1, "kind": "bytetrack", "tracker": _Evil()}),
                      "format"),
    "wrong version": (lambda b: b[:7] + bytes([9]) + b[8:], "version"),
    "truncated header": (lambda b: b[:20], "format"),
    "header not JSON": (lambda b: b[:12] + b"{" * (len(b) - 12), "format"),
    "header length beyond the end": (lambda b: b[:8] + struct.pack("<I", 10**6) + b[12:],
                                     "format"),
    "truncated floats": (lambda b: b[:-8], "format"),
    "too large": (lambda b: b + b"\0" * trackstate.MAX_BYTES, "too_large"),
    "other tracker": (lambda b: _edit_header(b, _set("kind", "botsort")), "kind"),
    "missing key": (lambda b: _edit_header(b, lambda h: h.pop("gaps_us")), "values"),
    "extra key": (lambda b: _edit_header(b, _set("cmd", "x")), "values"),
    "frame as a string": (lambda b: _edit_header(b, _set("frame", "7")), "values"),
    "huge next id": (lambda b: _edit_header(b, _set("next_id", 10**30)), "values"),
    "negative frame": (lambda b: _edit_header(b, _set("frame", -1)), "values"),
    "bool as an id": (lambda b: _edit_header(b, _track(0, True)), "values"),
    "id beyond the counter": (lambda b: _edit_header(b, _track(0, 10**6)), "values"),
    "duplicate ids": (lambda b: _edit_header(b, lambda h: h["tracks"][1].__setitem__(
        0, h["tracks"][0][0])), "values"),
    "unknown track state": (lambda b: _edit_header(b, _track(1, 7)), "values"),
    "score above 1": (lambda b: _edit_header(b, _track(4, 5.0)), "values"),
    "tracks not a list": (lambda b: _edit_header(b, _set("tracks", {"a": 1})), "values"),
    "too many gaps": (lambda b: _edit_header(b, _set("gaps_us", [1] * 100)), "values"),
    "NaN in a mean": (lambda b: _edit_floats(b, lambda f: f.__setitem__((0, 0), np.nan)),
                      "values"),
    "huge coordinate": (lambda b: _edit_floats(b, lambda f: f.__setitem__((0, 1), 1e300)),
                        "values"),
    "zero height": (lambda b: _edit_floats(b, lambda f: f.__setitem__((0, 3), 0.0)), "values"),
    "covariance not PSD": (lambda b: _edit_floats(b, lambda f: f.__setitem__(
        (0, slice(8, None)), -np.eye(8).reshape(64))), "values"),
    "covariance not symmetric": (lambda b: _edit_floats(b, lambda f: f.__setitem__(
        (0, 9), 50.0)), "values"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_saved_state_refuses_what_it_did_not_write(case: str) -> None:
    make, reason = BAD[case]
    blob = make(_valid())
    t = camera_tracker()
    before = t.dumps()
    with pytest.raises(trackstate.BadTrackState) as err:
        t.load_state(blob)
    assert err.value.reason == reason, err.value
    assert t.dumps() == before, "a refused state changes nothing"
    assert not (Path(os.environ.get("TMPDIR", "/tmp")) / "pwned").exists()


def test_a_failing_update_costs_one_frame_of_ids_not_the_leader(rdb) -> None:
    from cctv.settings import load_settings

    tracking = Tracking(load_settings({"CCTV_TRACKER": "bytetrack"}), rdb)
    for i in range(5):
        out = tracking.track("cam", [Detection(2, "car", 0.9, (10 + i, 10, 60 + i, 50))],
                             i * 100_000, None)
    assert out[0].track == 1
    tracking.cameras["cam"].tracker.tracked = None  # a broken tracker (a bug, say)
    out = tracking.track("cam", [Detection(2, "car", 0.9, (15, 10, 65, 50))], 500_000, None)
    assert out[0].track is None
    ids = [tracking.track("cam", [Detection(2, "car", 0.9, (16 + i, 10, 66 + i, 50))],
                          (6 + i) * 100_000, None)[0].track for i in range(3)]
    assert ids[-1] is not None and ids[-1] > 1, "a fresh tracker, with new ids"


# ---- the same ids as ultralytics' trackers ---------------------------------------------------
@pytest.fixture(scope="module")
def clip_detections() -> list[list[Detection]]:
    """The OpenVINO detector's boxes on the first 300 frames of the sample clip."""
    import cv2

    from cctv.inference.detector import load_detector

    det = load_detector(str(MODEL_OPENVINO))
    cap = cv2.VideoCapture(str(CLIP))
    out = []
    while len(out) < 300:
        ok, img = cap.read()
        if not ok:
            break
        out.append(det.detect([img])[0])
    cap.release()
    assert len(out) == 300
    return out


@pytest.mark.parametrize("kind", ["bytetrack", "botsort"])
def test_same_ids_as_ultralytics_on_the_clip(kind: str, clip_detections) -> None:
    """Our tracker is a port: on the real clip, at 30, 15 and 10 fps, every frame gets exactly
    the ids ultralytics' tracker gives (the dev venv has ultralytics; the images need not)."""
    pytest.importorskip("ultralytics", reason="the comparison needs ultralytics (dev venv)")
    from types import SimpleNamespace

    import ultralytics
    import yaml
    from ultralytics.trackers.bot_sort import BOTSORT
    from ultralytics.trackers.byte_tracker import BYTETracker

    cfg = Path(ultralytics.__file__).parent / "cfg" / "trackers" / f"{kind}.yaml"
    args = {**yaml.safe_load(cfg.read_text()), "track_buffer": 30}
    args.update(gmc_method="none", with_reid=False)
    for step in (1, 2, 3):
        theirs = (BOTSORT if kind == "botsort" else BYTETracker)(SimpleNamespace(**args))
        ours = ByteTracker(kind, 30)
        frames = same = 0
        for dets in clip_detections[::step]:
            xyxy = np.array([d.xyxy for d in dets], np.float32).reshape(-1, 4)
            conf = np.array([d.conf for d in dets], np.float32)
            cls = np.array([d.cls for d in dets], np.float32)
            rows = theirs.update(Boxes(xyxy, conf, cls), None)
            want = {int(r[-1]): int(r[-4]) for r in rows}
            frames += 1
            same += ours.update(xyxy, conf, cls) == want
        assert same == frames, f"{kind} at every {step}. frame: {frames - same} frames differ"


# ---- without torch ---------------------------------------------------------------------------
_CLIP_RUN = """
import importlib.metadata, json, sys
import cv2
from cctv.settings import load_settings
from cctv.inference.detector import load_detector
det = load_detector(sys.argv[1])
before = set(sys.modules)  # what the tracker adds to what the detector needs
from cctv.inference.bytetrack import ByteTracker
from cctv.inference.tracking import CameraTracker, warm_tracker
try:
    import torch  # noqa: F401
    sys.exit("torch is importable")
except ImportError:
    pass
kind = warm_tracker(load_settings({"CCTV_TRACKER": "auto"}))
ct = CameraTracker("cam", ByteTracker(kind, 30))
cap = cv2.VideoCapture(sys.argv[2])
results, i = [], 0
while len(results) < 200:
    ok, img = cap.read()
    if not ok:
        break
    if i % 3 == 0:  # the clip at 10 fps, as a live leader sees it
        results.append([d.to_json() for d in ct.update(det.detect([img])[0], i * 33_333, img)])
        if len(results) == 100:  # a take-over half-way: a new tracker from the saved state
            blob = ct.dumps()
            ct = CameraTracker("cam", ByteTracker(kind, 30))
            ct.load_state(blob)
    i += 1
names = importlib.metadata.packages_distributions()
loaded = {m.partition(".")[0] for m in sys.modules} - set(sys.stdlib_module_names)
added = {m.partition(".")[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)
print(json.dumps({"kind": kind, "results": results, "blocked": sorted(loaded & set(sys.argv[3:])),
                  "modules": {m: names.get(m, []) for m in sorted(added)}}))
"""


def _cpu_image_distributions() -> set[str]:
    """The distributions the CPU image installs: its two requirement files and everything they
    require (as installed here)."""
    import importlib.metadata as md

    from packaging.markers import Marker

    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    todo = []
    for f in ("requirements-app.txt", "requirements-inference-cpu.txt"):
        todo += [ln.strip() for ln in (ROOT / "docker" / f).read_text().splitlines()
                 if ln.strip() and not ln.startswith("#")]
    seen: set[str] = set()
    while todo:
        name = norm(re.split(r"[<>=!~;\[ ]", todo.pop(), maxsplit=1)[0])
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for r in reqs:
            _, _, marker = r.partition(";")
            if marker.strip() and not Marker(marker.strip()).evaluate({"extra": ""}):
                continue
            todo.append(r)
    return seen


def test_tracks_the_clip_without_torch_with_only_what_the_cpu_image_installs(tmp_path) -> None:
    script = tmp_path / "clip_run.py"
    script.write_text(_CLIP_RUN)
    env = without_torch(service_env("redis://127.0.0.1:1/0"), tmp_path)
    out = subprocess.run([sys.executable, str(script), str(MODEL_OPENVINO), str(CLIP),
                          *NOT_IN_CPU_IMAGE], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads(out.stdout.strip().splitlines()[-1])
    assert run["kind"] == "bytetrack", "CCTV_TRACKER=auto tracks without torch"
    assert not run["blocked"], run["blocked"]
    image = _cpu_image_distributions() | {"cctv-swarm"}
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    # what the tracker imports on top of the detector is in the CPU image
    outside = {m: d for m, d in run["modules"].items()
               if d and not {norm(x) for x in d} & image}
    assert not outside, f"imported but not installed by the CPU image: {outside}"
    report = track_stats(run["results"])
    print("tracking without torch:", report)
    assert report["results"] == 200
    assert report["tracked"] > 0.7 * report["detections"], report
    assert report["id_switch_rate"] <= 0.25, report
    # the same objects keep their ids over the take-over half-way
    ids = lambda r: {d["track"] for d in r if "track" in d}  # noqa: E731
    assert len(ids(run["results"][99]) & ids(run["results"][100])) >= 3
