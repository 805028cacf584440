"""Per-camera detection settings (the camera registry's ``detect``: core/registry.py), applied
in the leader right after the model and before tracking, so an ignored detection never reaches
tracking, results, events or the viewer.

A camera's settings: ``classes`` (replacing ``CCTV_CLASSES`` for that camera, same syntax),
``min_conf`` (the least confidence kept; the model already drops what is under ``CCTV_CONF``),
``min_area`` / ``max_area`` (the box's area as a fraction of the frame) and ``masks`` (polygons
in frame fractions; a detection whose box's bottom centre, where the object stands, is inside
one is ignored; a point on a polygon's edge is inside). A camera without settings keeps what
``CCTV_CLASSES`` keeps.

The registry is read through :class:`~cctv.core.registry.RegistryCache` once per batch (one
GET a second at most), and the filters are built again only when its version moves, so a
``cctv cameras set`` applies within about a second without a restart. A registry that cannot
be read keeps the last filters; a camera's class the model does not have is logged once per
registry version and counted, and that camera keeps the service-wide classes meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cctv.core.logthrottle import LogThrottle
from cctv.core.registry import DetectSettings, RegistryCache, Snapshot
from cctv.inference.classes import ClassesError, ClassFilter, class_filter
from cctv.inference.metrics import FILTERED, SETTINGS_REJECTED

if TYPE_CHECKING:
    from cctv.inference.detector import Detection

log = logging.getLogger("cctv.inference.camera_filter")

Point = tuple[float, float]

#: how close (in frame fractions) a point must be to a polygon's edge to count as on it
_EDGE_EPS = 1e-9


@dataclass(frozen=True)
class Mask:
    """One mask polygon and its bounding box (most points are outside it: a cheap test)."""

    points: tuple[Point, ...]
    x_min: float
    y_min: float
    x_max: float
    y_max: float

    @classmethod
    def of(cls, points: tuple[Point, ...]) -> Mask:
        """The mask of polygon ``points``."""
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return cls(tuple(points), min(xs), min(ys), max(xs), max(ys))

    def contains(self, x: float, y: float) -> bool:
        """True when (x, y) is inside the polygon or on its edge."""
        if not (self.x_min <= x <= self.x_max and self.y_min <= y <= self.y_max):
            return False
        return point_in_polygon(x, y, self.points)


def _on_segment(x: float, y: float, a: Point, b: Point) -> bool:
    (x1, y1), (x2, y2) = a, b
    cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
    if abs(cross) > _EDGE_EPS:
        return False
    return (min(x1, x2) - _EDGE_EPS <= x <= max(x1, x2) + _EDGE_EPS
            and min(y1, y2) - _EDGE_EPS <= y <= max(y1, y2) + _EDGE_EPS)


def point_in_polygon(x: float, y: float, points: tuple[Point, ...]) -> bool:
    """True when (x, y) is inside the polygon ``points`` (any simple or self-crossing
    polygon, even-odd rule) or on one of its edges."""
    inside = False
    n = len(points)
    for i in range(n):
        a, b = points[i], points[(i + 1) % n]
        if _on_segment(x, y, a, b):
            return True
        (x1, y1), (x2, y2) = a, b
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


@dataclass(frozen=True)
class CameraFilter:
    """What one camera keeps of the model's detections. ``ids`` None keeps every class."""

    ids: frozenset[int] | None
    min_conf: float | None = None
    min_area: float | None = None
    max_area: float | None = None
    masks: tuple[Mask, ...] = ()

    def keep(self, detections: list[Detection], width: int, height: int) -> list[Detection]:
        """The ``detections`` (in pixels of a ``width`` x ``height`` frame) this camera keeps;
        the others are counted by the first rule that left them out."""
        if not detections:
            return detections
        frame_area = float(max(1, width) * max(1, height))
        out = []
        counts = dict.fromkeys(FILTERED, 0)
        for d in detections:
            reason = self._reason(d, width, height, frame_area)
            if reason is None:
                out.append(d)
            else:
                counts[reason] += 1
        for reason, n in counts.items():
            if n:
                FILTERED[reason].inc(n)
        return out

    def _reason(self, d: Detection, width: int, height: int, frame_area: float) -> str | None:
        if self.ids is not None and d.cls not in self.ids:
            return "class"
        if self.min_conf is not None and d.conf < self.min_conf:
            return "confidence"
        x1, y1, x2, y2 = d.xyxy
        if self.min_area is not None or self.max_area is not None:
            area = max(0, x2 - x1) * max(0, y2 - y1) / frame_area
            if ((self.min_area is not None and area < self.min_area)
                    or (self.max_area is not None and area > self.max_area)):
                return "area"
        if self.masks:
            # where the object stands: the middle of the box's bottom edge
            bx, by = (x1 + x2) / 2 / max(1, width), y2 / max(1, height)
            if any(m.contains(bx, by) for m in self.masks):
                return "mask"
        return None


def camera_classes(items: tuple[str, ...], names: Mapping[int, str] | None) -> ClassFilter:
    """The class filter of a camera's ``classes`` (names, ids, ``cctv`` or ``all``, as in
    ``CCTV_CLASSES``); raises :class:`ClassesError` for one the model does not have."""
    for item in items:
        if not item.strip() or "," in item:
            raise ClassesError(f"{item!r} is not a class name or id")
    return class_filter(",".join(items), names)


def build_filter(detect: DetectSettings, service: ClassFilter,
                 names: Mapping[int, str] | None, camera: str = "") -> CameraFilter:
    """The filter of a camera with settings ``detect`` (``service``: the CCTV_CLASSES filter).
    A class the model does not have is logged and counted; the camera then keeps the
    service-wide classes (and its other settings still apply)."""
    ids = service.ids
    if detect.classes is not None:
        try:
            ids = camera_classes(detect.classes, names).ids
        except ClassesError as exc:
            SETTINGS_REJECTED.labels(camera).inc()
            log.error("camera %s: detection classes %s: %s; the camera keeps CCTV_CLASSES "
                      "until this is fixed (`cctv cameras set %s --classes ...`)", camera,
                      ",".join(detect.classes), exc, camera, extra={"camera": camera})
    return CameraFilter(ids=ids, min_conf=detect.min_conf, min_area=detect.min_area,
                        max_area=detect.max_area,
                        masks=tuple(Mask.of(p) for p in detect.masks))


class CameraFilters:
    """Each camera's filter, built again when the registry's version moves (``refresh``, once
    per batch); a camera without an entry or settings gets the service-wide one."""

    def __init__(self, service: ClassFilter, names: Mapping[int, str] | None,
                 registry: RegistryCache | None = None) -> None:
        self.service, self.names, self.registry = service, names, registry
        self.default = CameraFilter(ids=service.ids)
        self._by_camera: dict[str, CameraFilter] = {}
        self._snap: Snapshot | None = None
        self._errors = LogThrottle(log)

    def refresh(self) -> None:
        """Take the registry's current copy; rebuild the filters when it changed. Never
        raises: on any error the filters built last stay."""
        if self.registry is None:
            return
        try:
            snap = self.registry.snapshot()
            if snap is self._snap:
                return
            self._by_camera = self._build(snap)
            self._snap = snap
        except Exception as exc:  # noqa: BLE001 - detection goes on with the last filters
            self._errors.warning("_registry", "camera detection settings not updated (%s: %s); "
                                 "keeping the last ones", type(exc).__name__, exc)

    def _build(self, snap: Snapshot) -> dict[str, CameraFilter]:
        out = {}
        for name, cam in snap.cameras.items():
            if cam.detect.is_default:
                continue
            try:
                out[name] = build_filter(cam.detect, self.service, self.names, name)
            except Exception as exc:  # noqa: BLE001 - one bad entry costs its own settings
                self._errors.warning(name, "camera %s: detection settings not applied (%s: "
                                     "%s); it keeps the service-wide ones", name,
                                     type(exc).__name__, exc)
                continue
            if self._by_camera.get(name) != out[name]:
                log.info("camera %s: detection settings %s applied (registry version %d)",
                         name, cam.detect.to_json(), snap.version, extra={"camera": name})
        for name in set(self._by_camera) - set(out):
            log.info("camera %s: service-wide detection settings (registry version %d)", name,
                     snap.version, extra={"camera": name})
        return out

    def for_camera(self, camera: str) -> CameraFilter:
        """The filter of ``camera``."""
        return self._by_camera.get(camera, self.default)
