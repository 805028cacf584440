"""The events config file (``CCTV_EVENTS_CONFIG``, YAML or JSON): cameras' zones, lines and
rules, webhook and MQTT receivers.

Every value is checked when the file is loaded; a bad one raises :class:`EventsConfigError`
whose message names the file and the field (``events.yaml: cameras.gate.rules[1].seconds:
must be >= 0``). Unknown keys are refused as probable typos. docs/events.md has examples.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cctv.core.settings import CAMERA_NAME_RE

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RULE_TYPES = ("dwell", "line", "count")
DIRECTIONS = ("any", "up", "down", "left", "right")
ANCHORS = ("bottom", "center")

Point = tuple[float, float]


class EventsConfigError(ValueError):
    """The events config is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class Zone:
    """A polygon in frame pixels; an object is inside when its anchor point is."""

    name: str
    points: tuple[Point, ...]
    anchor: str = "bottom"


@dataclass(frozen=True)
class Line:
    """A segment from ``a`` to ``b`` in frame pixels, crossed by objects' anchor points."""

    name: str
    a: Point
    b: Point
    anchor: str = "bottom"


@dataclass(frozen=True)
class Verify:
    """Second-stage check of a rule's crops by another ultralytics model."""

    model: str
    classes: tuple[str | int, ...] = ()
    threshold: float = 0.5
    imgsz: int = 224
    padding: float = 0.1


@dataclass(frozen=True)
class Rule:
    """One rule of a camera; ``type`` picks which fields matter (docs/events.md)."""

    name: str
    type: str
    classes: tuple[str | int, ...] = ()
    zone: str = ""
    line: str = ""
    seconds: float = 0.0
    count: int = 1
    direction: str = "any"
    cooldown_s: float = 0.0
    min_conf: float = 0.0
    verify: Verify | None = None

    def matches(self, det: dict) -> bool:
        """True when ``det`` (a detection dict) is of one of the rule's classes and sure enough."""
        if float(det.get("conf", 0.0)) < self.min_conf:
            return False
        return not self.classes or det.get("name") in self.classes or det.get(
            "cls") in self.classes


@dataclass(frozen=True)
class CameraConfig:
    """Zones, lines and rules of one camera."""

    name: str
    zones: dict[str, Zone] = field(default_factory=dict)
    lines: dict[str, Line] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Webhook:
    """An HTTP receiver of signed event batches."""

    name: str
    url: str
    batch_s: float = 10.0
    max_batch: int = 100
    max_attempts: int = 8
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    timeout_s: float = 5.0
    captions_only: bool = False
    images: tuple[str, ...] = ("crop",)


@dataclass(frozen=True)
class Mqtt:
    """An MQTT broker events are published to (optional; needs paho-mqtt)."""

    host: str
    port: int = 1883
    topic: str = "cctv/events"
    qos: int = 1
    captions_only: bool = True
    username: str = ""
    password_env: str = ""
    max_attempts: int = 8
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    batch_s: float = 1.0
    max_batch: int = 100
    name: str = "mqtt"


@dataclass(frozen=True)
class EventsConfig:
    """The whole file."""

    path: str
    cameras: dict[str, CameraConfig] = field(default_factory=dict)
    webhooks: tuple[Webhook, ...] = ()
    mqtt: Mqtt | None = None
    timezone: str = "UTC"
    track_timeout_s: float = 2.0
    exit_grace_s: float = 0.5
    clip_margin_s: float = 2.0

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class _Checker:
    """Reads typed values out of the parsed document, naming the file and field on errors."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, why: str) -> EventsConfigError:
        return EventsConfigError(f"{self.path}: {where}: {why}")

    def mapping(self, value: Any, where: str, allowed: set[str] | None = None) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a mapping, not {type(value).__name__}")
        if allowed is not None:
            unknown = sorted(set(map(str, value)) - allowed)
            if unknown:
                raise self.fail(f"{where}.{unknown[0]}" if where else unknown[0],
                                f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return value

    def number(self, value: Any, where: str, *, lo: float | None = None,
               hi: float | None = None, lo_open: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise self.fail(where, f"must be a number, not {value!r}")
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise self.fail(where, f"must be {'>' if lo_open else '>='} {lo:g}")
        if hi is not None and value > hi:
            raise self.fail(where, f"must be <= {hi:g}")
        return float(value)

    def integer(self, value: Any, where: str, *, lo: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"must be an integer, not {value!r}")
        if lo is not None and value < lo:
            raise self.fail(where, f"must be >= {lo}")
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"must be true or false, not {value!r}")
        return value

    def string(self, value: Any, where: str, *, choices: tuple[str, ...] = (),
               pattern: re.Pattern | None = None) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"must be a non-empty string, not {value!r}")
        if choices and value not in choices:
            raise self.fail(where, f"{value!r} is not one of {', '.join(choices)}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(where, f"{value!r} must match {pattern.pattern}")
        return value

    def point(self, value: Any, where: str) -> Point:
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise self.fail(where, f"a point is [x, y] in pixels, not {value!r}")
        return (self.number(value[0], f"{where}[0]", lo=0),
                self.number(value[1], f"{where}[1]", lo=0))

    def classes(self, value: Any, where: str) -> tuple[str | int, ...]:
        if isinstance(value, str | int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise self.fail(where, "must be a list of class names or ids")
        out: list[str | int] = []
        for i, c in enumerate(value):
            if isinstance(c, bool) or not isinstance(c, str | int) or c == "":
                raise self.fail(f"{where}[{i}]", f"a class is a name or an id, not {c!r}")
            if isinstance(c, int) and c < 0:
                raise self.fail(f"{where}[{i}]", "a class id is >= 0")
            out.append(c)
        return tuple(out)


def _zone(ck: _Checker, name: str, raw: Any, where: str) -> Zone:
    anchor = "bottom"
    if isinstance(raw, dict):
        ck.mapping(raw, where, {"points", "anchor"})
        anchor = ck.string(raw.get("anchor", "bottom"), f"{where}.anchor", choices=ANCHORS)
        raw, where = raw.get("points"), f"{where}.points"
    if not isinstance(raw, list) or len(raw) < 3:
        raise ck.fail(where, "a zone is a list of at least 3 [x, y] points")
    points = tuple(ck.point(p, f"{where}[{i}]") for i, p in enumerate(raw))
    area = 0.5 * abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2)
                         in zip(points, points[1:] + points[:1], strict=True)))
    if area < 1:
        raise ck.fail(where, "the polygon has no area")
    return Zone(name, points, anchor)


def _line(ck: _Checker, name: str, raw: Any, where: str) -> Line:
    anchor = "bottom"
    if isinstance(raw, dict):
        ck.mapping(raw, where, {"points", "anchor"})
        anchor = ck.string(raw.get("anchor", "bottom"), f"{where}.anchor", choices=ANCHORS)
        raw, where = raw.get("points"), f"{where}.points"
    if not isinstance(raw, list) or len(raw) != 2:
        raise ck.fail(where, "a line is two [x, y] points: [[x1, y1], [x2, y2]]")
    a, b = ck.point(raw[0], f"{where}[0]"), ck.point(raw[1], f"{where}[1]")
    if math.dist(a, b) < 2:
        raise ck.fail(where, "the two points are the same")
    return Line(name, a, b, anchor)


def _verify(ck: _Checker, raw: Any, where: str, base: Path) -> Verify:
    ck.mapping(raw, where, {"model", "classes", "threshold", "imgsz", "padding"})
    if "model" not in raw:
        raise ck.fail(f"{where}.model", "is required (any model ultralytics loads)")
    model = ck.string(raw["model"], f"{where}.model")
    path = Path(model) if Path(model).is_absolute() else base / model
    if not path.exists():
        raise ck.fail(f"{where}.model", f"{path} does not exist")
    imgsz = ck.integer(raw.get("imgsz", 224), f"{where}.imgsz", lo=32)
    if imgsz % 32:
        raise ck.fail(f"{where}.imgsz", "must be a multiple of 32")
    return Verify(
        model=str(path),
        classes=ck.classes(raw.get("classes", []), f"{where}.classes"),
        threshold=ck.number(raw.get("threshold", 0.5), f"{where}.threshold", lo=0, hi=1,
                            lo_open=True),
        imgsz=imgsz,
        padding=ck.number(raw.get("padding", 0.1), f"{where}.padding", lo=0, hi=2))


_RULE_KEYS = {
    "dwell": {"zone", "seconds"},
    "line": {"line", "direction"},
    "count": {"zone", "count", "seconds"},
}
_COMMON_RULE_KEYS = {"name", "type", "classes", "cooldown_s", "min_conf", "verify"}


def _rule(ck: _Checker, raw: Any, where: str, cam: CameraConfig, base: Path) -> Rule:
    ck.mapping(raw, where)
    rtype = ck.string(raw.get("type"), f"{where}.type", choices=RULE_TYPES)
    ck.mapping(raw, where, _COMMON_RULE_KEYS | _RULE_KEYS[rtype])
    name = ck.string(raw.get("name"), f"{where}.name", pattern=NAME_RE)
    kw: dict[str, Any] = {
        "classes": ck.classes(raw.get("classes", []), f"{where}.classes"),
        "cooldown_s": ck.number(raw.get("cooldown_s", 0), f"{where}.cooldown_s", lo=0),
        "min_conf": ck.number(raw.get("min_conf", 0), f"{where}.min_conf", lo=0, hi=1),
    }
    if "verify" in raw:
        kw["verify"] = _verify(ck, raw["verify"], f"{where}.verify", base)
    if rtype in ("dwell", "count"):
        zone = ck.string(raw.get("zone"), f"{where}.zone")
        if zone not in cam.zones:
            raise ck.fail(f"{where}.zone", f"no zone {zone!r} on camera {cam.name!r} "
                          f"(zones: {', '.join(sorted(cam.zones)) or 'none'})")
        kw["zone"] = zone
        kw["seconds"] = ck.number(raw.get("seconds", 0), f"{where}.seconds", lo=0)
    if rtype == "count":
        if "count" not in raw:
            raise ck.fail(f"{where}.count", "is required: fire when at least this many are in "
                          "the zone")
        kw["count"] = ck.integer(raw["count"], f"{where}.count", lo=1)
    if rtype == "line":
        line = ck.string(raw.get("line"), f"{where}.line")
        if line not in cam.lines:
            raise ck.fail(f"{where}.line", f"no line {line!r} on camera {cam.name!r} "
                          f"(lines: {', '.join(sorted(cam.lines)) or 'none'})")
        kw["line"] = line
        kw["direction"] = ck.string(raw.get("direction", "any"), f"{where}.direction",
                                    choices=DIRECTIONS)
    return Rule(name=name, type=rtype, **kw)


def _camera(ck: _Checker, name: str, raw: Any, where: str, base: Path) -> CameraConfig:
    if not CAMERA_NAME_RE.fullmatch(str(name)):
        raise ck.fail(where, f"camera name must match {CAMERA_NAME_RE.pattern}")
    ck.mapping(raw, where, {"zones", "lines", "rules"})
    zones_raw = ck.mapping(raw.get("zones", {}) or {}, f"{where}.zones")
    lines_raw = ck.mapping(raw.get("lines", {}) or {}, f"{where}.lines")
    for kind, items in (("zones", zones_raw), ("lines", lines_raw)):
        for n in items:
            ck.string(str(n), f"{where}.{kind}.{n}", pattern=NAME_RE)
    cam = CameraConfig(
        name=str(name),
        zones={str(n): _zone(ck, str(n), z, f"{where}.zones.{n}") for n, z in zones_raw.items()},
        lines={str(n): _line(ck, str(n), ln, f"{where}.lines.{n}")
               for n, ln in lines_raw.items()})
    rules_raw = raw.get("rules", []) or []
    if not isinstance(rules_raw, list):
        raise ck.fail(f"{where}.rules", "must be a list of rules")
    rules = tuple(_rule(ck, r, f"{where}.rules[{i}]", cam, base)
                  for i, r in enumerate(rules_raw))
    seen: set[str] = set()
    for i, r in enumerate(rules):
        if r.name in seen:
            raise ck.fail(f"{where}.rules[{i}].name", f"{r.name!r} is used twice on this camera")
        seen.add(r.name)
    return CameraConfig(cam.name, cam.zones, cam.lines, rules)


def _webhook(ck: _Checker, raw: Any, where: str) -> Webhook:
    ck.mapping(raw, where, {"name", "url", "batch_s", "max_batch", "max_attempts", "backoff_s",
                            "backoff_max_s", "timeout_s", "captions_only", "images"})
    url = ck.string(raw.get("url"), f"{where}.url")
    if not re.match(r"^https?://[^\s/]+", url):
        raise ck.fail(f"{where}.url", f"{url!r} is not an http(s) URL")
    images = raw.get("images", ["crop"])
    if not isinstance(images, list) or any(i not in ("crop", "snapshot") for i in images):
        raise ck.fail(f"{where}.images", "a list of crop and/or snapshot")
    return Webhook(
        name=ck.string(raw.get("name"), f"{where}.name", pattern=NAME_RE), url=url,
        batch_s=ck.number(raw.get("batch_s", 10), f"{where}.batch_s", lo=0),
        max_batch=ck.integer(raw.get("max_batch", 100), f"{where}.max_batch", lo=1),
        max_attempts=ck.integer(raw.get("max_attempts", 8), f"{where}.max_attempts", lo=1),
        backoff_s=ck.number(raw.get("backoff_s", 1), f"{where}.backoff_s", lo=0, lo_open=True),
        backoff_max_s=ck.number(raw.get("backoff_max_s", 60), f"{where}.backoff_max_s", lo=0,
                                lo_open=True),
        timeout_s=ck.number(raw.get("timeout_s", 5), f"{where}.timeout_s", lo=0, lo_open=True),
        captions_only=ck.boolean(raw.get("captions_only", False), f"{where}.captions_only"),
        images=tuple(images))


def _mqtt(ck: _Checker, raw: Any, where: str) -> Mqtt:
    ck.mapping(raw, where, {"host", "port", "topic", "qos", "captions_only", "username",
                            "password_env", "max_attempts", "backoff_s", "backoff_max_s",
                            "batch_s", "max_batch"})
    port = ck.integer(raw.get("port", 1883), f"{where}.port", lo=1)
    if port > 65535:
        raise ck.fail(f"{where}.port", "must be <= 65535")
    qos = ck.integer(raw.get("qos", 1), f"{where}.qos", lo=0)
    if qos > 2:
        raise ck.fail(f"{where}.qos", "must be 0, 1 or 2")
    return Mqtt(
        host=ck.string(raw.get("host"), f"{where}.host"), port=port,
        topic=ck.string(raw.get("topic", "cctv/events"), f"{where}.topic",
                        pattern=re.compile(r"^[^#+\s]+$")),
        qos=qos,
        captions_only=ck.boolean(raw.get("captions_only", True), f"{where}.captions_only"),
        username=str(raw.get("username", "")),
        password_env=str(raw.get("password_env", "")),
        max_attempts=ck.integer(raw.get("max_attempts", 8), f"{where}.max_attempts", lo=1),
        backoff_s=ck.number(raw.get("backoff_s", 1), f"{where}.backoff_s", lo=0, lo_open=True),
        backoff_max_s=ck.number(raw.get("backoff_max_s", 60), f"{where}.backoff_max_s", lo=0,
                                lo_open=True),
        batch_s=ck.number(raw.get("batch_s", 1), f"{where}.batch_s", lo=0),
        max_batch=ck.integer(raw.get("max_batch", 100), f"{where}.max_batch", lo=1))


def parse_config(doc: Any, path: str = "<config>", base: Path | None = None) -> EventsConfig:
    """Validate a parsed document (the file's YAML/JSON) into :class:`EventsConfig`."""
    ck = _Checker(path)
    base = base or Path.cwd()
    if doc is None:
        doc = {}
    ck.mapping(doc, "", {"cameras", "webhooks", "mqtt", "timezone", "track_timeout_s",
                         "exit_grace_s", "clip_margin_s"})
    tz = ck.string(doc.get("timezone", "UTC"), "timezone")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ck.fail("timezone", f"{tz!r} is not a known time zone (e.g. UTC, "
                      "Europe/Berlin)") from None
    cams_raw = ck.mapping(doc.get("cameras", {}) or {}, "cameras")
    hooks_raw = doc.get("webhooks", []) or []
    if not isinstance(hooks_raw, list):
        raise ck.fail("webhooks", "must be a list of webhooks")
    hooks = tuple(_webhook(ck, h, f"webhooks[{i}]") for i, h in enumerate(hooks_raw))
    names = [h.name for h in hooks]
    if len(set(names)) != len(names):
        raise ck.fail("webhooks", "two webhooks have the same name")
    mqtt = _mqtt(ck, doc["mqtt"], "mqtt") if doc.get("mqtt") else None
    if mqtt is not None and mqtt.name in names:
        raise ck.fail("webhooks", "the name 'mqtt' is taken by the MQTT receiver")
    return EventsConfig(
        path=path,
        cameras={str(n): _camera(ck, str(n), c, f"cameras.{n}", base)
                 for n, c in cams_raw.items()},
        webhooks=hooks, mqtt=mqtt, timezone=tz,
        track_timeout_s=ck.number(doc.get("track_timeout_s", 2.0), "track_timeout_s", lo=0,
                                  lo_open=True),
        exit_grace_s=ck.number(doc.get("exit_grace_s", 0.5), "exit_grace_s", lo=0),
        clip_margin_s=ck.number(doc.get("clip_margin_s", 2.0), "clip_margin_s", lo=0))


def load_config(path: str | Path) -> EventsConfig:
    """Read and validate the events config file (``.json``, else YAML)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise EventsConfigError(f"CCTV_EVENTS_CONFIG={p}: cannot read: {exc.strerror}") from None
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise EventsConfigError(f"{p}: not valid JSON: {exc}") from None
    else:
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise EventsConfigError(f"{p}: not valid YAML: {exc}") from None
    return parse_config(doc, str(p), p.resolve().parent)
