"""Per-camera detection settings (the registry's ``detect``), applied in the inference leader
between the model and the tracker: each rule alone, mask polygons at their edges, a camera's
classes replacing CCTV_CLASSES, a class the model lacks falling back to CCTV_CLASSES, an
unreadable or malformed registry never stopping detection; and end to end with real processes,
the settings changed live without a restart."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import prometheus_client
import pytest
import redis

from cctv.core import keys
from cctv.core.registry import Camera, DetectSettings, Registry, RegistryCache, Snapshot
from cctv.inference.camera_filter import (
    CameraFilter,
    CameraFilters,
    Mask,
    build_filter,
    point_in_polygon,
)
from cctv.inference.classes import class_filter
from cctv.inference.detector import Detection

from support import (
    MODEL_OPENVINO,
    FrameSender,
    Service,
    clip_jpegs,
    free_port,
    redis_password_for,
    running,
    service_env,
    wait_for,
)

#: a few COCO classes, with their COCO ids
NAMES = {0: "person", 2: "car", 13: "bench", 16: "dog"}
SERVICE = class_filter("cctv", NAMES)  # person, car, dog
W, H = 640, 480
TOK1, TOK2 = "tok1-16charsfortests", "tok2-16charsfortests"
FULL_FRAME = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))


def det(cls: int = 0, conf: float = 0.9, xyxy: tuple[int, int, int, int] = (100, 100, 200, 300)
        ) -> Detection:
    return Detection(cls, NAMES.get(cls, str(cls)), conf, xyxy)


def filtered(reason: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(
        "cctv_inference_detections_filtered_total", {"reason": reason}) or 0.0


def rejected(camera: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(
        "cctv_inference_camera_settings_rejected_total", {"camera": camera}) or 0.0


def keep(detect: DetectSettings, dets: list[Detection]) -> list[Detection]:
    return build_filter(detect, SERVICE, NAMES, "cam1").keep(dets, W, H)


# ---- each rule ---------------------------------------------------------------------------------

def test_a_camera_without_settings_keeps_what_cctv_classes_keeps() -> None:
    dets = [det(0), det(2), det(13), det(16)]
    before = filtered("class")
    assert keep(DetectSettings(), dets) == [dets[0], dets[1], dets[3]]
    assert filtered("class") == before + 1  # the bench
    assert CameraFilter(ids=None).keep(dets, W, H) == dets


def test_a_cameras_classes_replace_cctv_classes() -> None:
    dets = [det(0), det(2), det(13), det(16)]
    assert keep(DetectSettings(classes=("bench",)), dets) == [dets[2]]  # not a CCTV class
    assert keep(DetectSettings(classes=("person", "Car")), dets) == dets[:2]
    assert keep(DetectSettings(classes=("0", "16")), dets) == [dets[0], dets[3]]  # ids
    assert keep(DetectSettings(classes=("all",)), dets) == dets
    assert keep(DetectSettings(classes=("cctv",)), dets) == [dets[0], dets[1], dets[3]]


def test_min_conf_keeps_the_sure_ones() -> None:
    dets = [det(conf=0.3), det(conf=0.5), det(conf=0.8)]
    before = filtered("confidence")
    assert keep(DetectSettings(min_conf=0.5), dets) == dets[1:]
    assert filtered("confidence") == before + 1


def test_area_is_a_fraction_of_the_frame() -> None:
    small = det(xyxy=(0, 0, 32, 48))  # 0.5 % of 640 x 480
    mid = det(xyxy=(0, 0, 320, 96))  # 10 %
    big = det(xyxy=(0, 0, 640, 240))  # 50 %
    before = filtered("area")
    assert keep(DetectSettings(min_area=0.01), [small, mid, big]) == [mid, big]
    assert keep(DetectSettings(max_area=0.2), [small, mid, big]) == [small, mid]
    assert keep(DetectSettings(min_area=0.1, max_area=0.1), [small, mid, big]) == [mid]
    assert filtered("area") == before + 4
    # the same box is a larger share of a smaller frame
    f = build_filter(DetectSettings(max_area=0.2), SERVICE, NAMES)
    assert f.keep([mid], 320, 240) == []


def test_a_mask_ignores_what_stands_in_it() -> None:
    # the left half of the frame
    left = DetectSettings(masks=(((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)),))
    in_left = det(xyxy=(100, 100, 200, 300))  # bottom centre (150, 300): x 0.23
    straddles = det(xyxy=(250, 100, 450, 300))  # bottom centre x 350/640 = 0.55: outside
    head_in_mask = det(xyxy=(300, 0, 400, 479))  # its bottom centre is outside
    before = filtered("mask")
    assert keep(left, [in_left, straddles, head_in_mask]) == [straddles, head_in_mask]
    assert filtered("mask") == before + 1
    # a box reaching the frame's bottom edge (boxes are clipped to w-1, h-1) in a full mask
    edge = det(xyxy=(0, 400, 1, 479))
    assert keep(DetectSettings(masks=(FULL_FRAME,)), [edge, in_left, straddles]) == []


def test_rules_count_under_the_first_that_applies() -> None:
    d = det(13, conf=0.1, xyxy=(0, 0, 1, 1))  # wrong class, unsure, tiny, in the mask
    before = {r: filtered(r) for r in ("class", "confidence", "area", "mask")}
    settings = DetectSettings(min_conf=0.5, min_area=0.1, masks=(FULL_FRAME,))
    assert keep(settings, [d]) == []
    assert filtered("class") == before["class"] + 1
    assert all(filtered(r) == before[r] for r in ("confidence", "area", "mask"))


# ---- polygons ------------------------------------------------------------------------------------

SQUARE = ((0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6))
#: a U: the notch between its arms (x 0.4-0.6, y 0-0.6) is outside
U = ((0.2, 0.0), (0.4, 0.0), (0.4, 0.6), (0.6, 0.6), (0.6, 0.0), (0.8, 0.0), (0.8, 0.8),
     (0.2, 0.8))


@pytest.mark.parametrize("poly, point, inside", [
    (SQUARE, (0.4, 0.4), True),
    (SQUARE, (0.1, 0.4), False),
    (SQUARE, (0.2, 0.4), True),  # on the left edge
    (SQUARE, (0.6, 0.6), True),  # a corner
    (SQUARE, (0.4, 0.6), True),  # on the bottom edge
    (SQUARE, (0.4, 0.6000001), False),
    (SQUARE, (0.7, 0.2), False),  # level with the top edge, beside it
    (U, (0.5, 0.3), False),  # in the notch
    (U, (0.3, 0.3), True),  # in an arm
    (U, (0.5, 0.7), True),  # below the notch
    (U, (0.9, 0.6), False),  # level with the notch's floor, right of the U
    (((0.1, 0.1), (0.9, 0.1), (0.5, 0.9)), (0.5, 0.5), True),  # a triangle
    (((0.1, 0.1), (0.9, 0.1), (0.5, 0.9)), (0.2, 0.8), False),
    (((0.1, 0.1), (0.5, 0.5), (0.9, 0.9)), (0.3, 0.4), False),  # no area
    (((0.1, 0.1), (0.5, 0.5), (0.9, 0.9)), (0.3, 0.3), True),  # ... but its edge
    (tuple(reversed(SQUARE)), (0.4, 0.4), True),  # either winding
])
def test_point_in_polygon(poly, point, inside: bool) -> None:
    assert point_in_polygon(*point, poly) is inside
    assert Mask.of(poly).contains(*point) is inside


def test_a_detection_in_any_of_several_masks_is_ignored() -> None:
    two = DetectSettings(masks=(SQUARE, ((0.7, 0.7), (1.0, 0.7), (1.0, 1.0), (0.7, 1.0))))
    in_first = det(xyxy=(200, 100, 300, 200))  # (250, 200) -> (0.39, 0.42)
    in_second = det(xyxy=(500, 300, 600, 400))  # (550, 400) -> (0.86, 0.83)
    in_none = det(xyxy=(0, 0, 50, 50))
    assert keep(two, [in_first, in_second, in_none]) == [in_none]


# ---- the registry: versions, unknown classes, outages, malformed entries ---------------------

class FakeCache:
    """A RegistryCache stand-in: a new Snapshot object per version, as the real one."""

    def __init__(self) -> None:
        self.snap = Snapshot({}, frozenset(), 0, True)
        self.fail = False

    def set(self, **detect: DetectSettings) -> None:
        cams = {n: Camera(name=n, detect=d) for n, d in detect.items()}
        self.snap = Snapshot(cams, frozenset(), self.snap.version + 1, True)

    def snapshot(self) -> Snapshot:
        if self.fail:
            raise redis.ConnectionError("down")
        return self.snap


def test_a_class_the_model_lacks_falls_back_to_cctv_classes_logged_once_per_version(
        caplog) -> None:
    cache = FakeCache()
    filters = CameraFilters(SERVICE, NAMES, cache)  # type: ignore[arg-type]
    cache.set(camx=DetectSettings(classes=("person", "unicorn"), min_conf=0.5))
    before = rejected("camx")
    with caplog.at_level(logging.ERROR, "cctv.inference.camera_filter"):
        for _ in range(3):
            filters.refresh()
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(lines) == 1 and "camera camx" in lines[0] and "unicorn" in lines[0], lines
    assert rejected("camx") == before + 1
    f = filters.for_camera("camx")
    assert f.ids == SERVICE.ids and f.min_conf == 0.5  # the other settings still apply
    assert f.keep([det(2, conf=0.9), det(13, conf=0.9), det(0, conf=0.3)], W, H) == [
        det(2, conf=0.9)]
    cache.set(camx=DetectSettings(classes=("person", "unicorn")))  # another version
    filters.refresh()
    assert rejected("camx") == before + 2
    for bad in ((" ",), ("person,car",)):
        cache.set(camx=DetectSettings(classes=bad))
        filters.refresh()
        assert filters.for_camera("camx").ids == SERVICE.ids


def test_settings_follow_the_registry_version_and_survive_an_outage() -> None:
    cache = FakeCache()
    filters = CameraFilters(SERVICE, NAMES, cache)  # type: ignore[arg-type]
    filters.refresh()
    assert filters.for_camera("cam1") is filters.default
    cache.set(cam1=DetectSettings(classes=("person",)), cam2=DetectSettings())
    filters.refresh()
    assert filters.for_camera("cam1").ids == frozenset({0})
    assert filters.for_camera("cam2") is filters.default  # an entry without settings
    assert filters.for_camera("other") is filters.default  # no entry
    cache.fail = True
    filters.refresh()  # Redis down: the filters built last stay
    assert filters.for_camera("cam1").ids == frozenset({0})
    cache.fail = False
    cache.set()
    filters.refresh()
    assert filters.for_camera("cam1") is filters.default
    assert CameraFilters(SERVICE, NAMES).for_camera("cam1") is not None  # no registry at all


def test_the_inference_user_reads_the_registry_and_skips_a_malformed_entry(
        redis_server, rdb) -> None:
    Registry(rdb).add("cam1", token=TOK1, detect=DetectSettings(classes=("person",)))
    Registry(rdb).add("cam2", token=TOK2, detect=DetectSettings(min_conf=0.7))
    rdb.hset(keys.CAMERAS_REGISTRY, "cam2", json.dumps({"name": "cam2", "detect": {
        "min_conf": 7}}))
    rdb.hset(keys.CAMERAS_REGISTRY, "cam3", b"\xff not json")
    rdb.incr(keys.CAMERAS_VERSION)
    inference = redis.Redis(host="127.0.0.1", port=redis_server.port, username="inference",
                            password=redis_password_for("inference"))
    try:
        filters = CameraFilters(SERVICE, NAMES, RegistryCache(inference))
        filters.refresh()
        assert filters.for_camera("cam1").ids == frozenset({0})
        assert filters.for_camera("cam2") is filters.default
        assert filters.for_camera("cam3") is filters.default
        # the inference user may read the registry, never change it
        with pytest.raises(redis.exceptions.NoPermissionError):
            inference.hset(keys.CAMERAS_REGISTRY, "cam1", "{}")
        with pytest.raises(redis.exceptions.NoPermissionError):
            inference.incr(keys.CAMERAS_VERSION)
    finally:
        inference.close()
        redis_server.acl_denials()  # the refusals above are the point

    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    filters = CameraFilters(SERVICE, NAMES, RegistryCache(dead))
    filters.refresh()  # nothing listens: the service-wide settings, no exception
    assert filters.for_camera("cam1") is filters.default


# ---- end to end ----------------------------------------------------------------------------------

def _results(rdb, camera: str, after: bytes = b"-") -> list[tuple[bytes, list[dict]]]:
    start = after if after == b"-" else b"(" + after
    return [(i, json.loads(f[b"dets"])) for i, f in rdb.xrange(keys.detections(camera), start)]


def test_settings_apply_in_the_leader_and_change_live(redis_server, rdb, start_ingest,
                                                      tmp_path: Path) -> None:
    registry = Registry(rdb)
    registry.add("cam1", token=TOK1, detect=DetectSettings(classes=("person",)))
    registry.add("cam2", token=TOK2)
    cameras = f"cam1:{TOK1},cam2:{TOK2}"
    url, ingest = start_ingest(cameras=cameras)
    infer = Service(["inference", "--id", "w1"],
                    service_env(redis_server.url, model=MODEL_OPENVINO, cameras=cameras,
                                inference_http_bind=f"127.0.0.1:{free_port()}"),
                    tmp_path, "inference")
    jpegs = clip_jpegs(n=30, step=10)
    with running([infer]):
        wait_for(lambda: rdb.get(keys.LEASE_INFERENCE) is not None, 120, "the replica to lead",
                 [infer])
        senders = [FrameSender(url, cam, tok, jpegs, fps=4).start()
                   for cam, tok in (("cam1", TOK1), ("cam2", TOK2))]
        try:
            def names(cam: str) -> set[str]:
                return {d["name"] for _i, dets in _results(rdb, cam) for d in dets}

            wait_for(lambda: "person" in names("cam1") and "car" in names("cam2"), 60,
                     "people on cam1 and cars on cam2", [infer, ingest])
            assert names("cam1") == {"person"}  # the camera's classes: only people
            assert "car" in names("cam2") and "bench" not in names("cam2")  # CCTV_CLASSES

            # a mask over the whole frame, set live: cam1 publishes no detection any more
            last = rdb.xrevrange(keys.detections("cam1"), count=1)[0][0]
            registry.update("cam1", detect=DetectSettings(masks=(FULL_FRAME,)))

            def empty_run(n: int) -> bool:
                after = _results(rdb, "cam1", last)
                return len(after) >= n and all(not dets for _i, dets in after[-n:])

            wait_for(lambda: empty_run(4), 15, "cam1's results to be empty", [infer])
            settled = _results(rdb, "cam1", last)
            first_empty = next(i for i, (_id, dets) in enumerate(settled)
                               if all(not d for _j, d in settled[i:]))
            assert first_empty <= 12, f"{first_empty} results after the change still had boxes"
            wait_for(lambda: len(_results(rdb, "cam1", last)) >= len(settled) + 4, 15,
                     "more cam1 results", [infer])
            assert all(not dets for _i, dets in _results(rdb, "cam1", last)[first_empty:])
            assert "car" in {d["name"] for _i, dets in _results(rdb, "cam2", last)
                             for d in dets}  # the other camera is untouched
            assert infer.proc.poll() is None
            assert "camera cam1: detection settings" in infer.log()
        finally:
            for s in senders:
                s.stop()
