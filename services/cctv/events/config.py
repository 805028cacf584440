"""The events config file (``CCTV_EVENTS_CONFIG``, YAML or JSON): cameras' zones, lines and
rules, webhook and MQTT receivers.

The file is checked against a schema (pydantic models, below the service's own dataclasses)
when it is loaded; every bad value is reported at once in an :class:`EventsConfigError`, one
line each naming the file and the field (``events.yaml: cameras.gate.rules[1].seconds: must be
>= 0``). Unknown keys are refused as probable typos, with the keys allowed there.
docs/events.md has examples.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    create_model,
    field_validator,
)

from cctv.core.settings import CAMERA_NAME_RE
from cctv.events import sinks

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
class EventsConfig:
    """The whole file."""

    path: str
    cameras: dict[str, CameraConfig] = field(default_factory=dict)
    #: each registered sink's checked section by its key (also readable as ``cfg.<key>``)
    sinks: dict[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    track_timeout_s: float = 2.0
    exit_grace_s: float = 0.5
    clip_margin_s: float = 2.0

    def __getattr__(self, name: str) -> Any:
        found = self.__dict__.get("sinks", {})
        if name in found:
            return found[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


# ---- the file's schema (pydantic): shapes, types and ranges --------------------------------
# Scalars are strict (no "3" for 3, no true for 1); containers accept YAML's lists. What needs
# more than one field (a rule's zone must exist on its camera, names unique, a verifier model
# on disk) is checked after the schema, in :func:`parse_config`, with the same path notation.

def or_default(default: Any) -> BeforeValidator:
    """YAML writes an empty section as ``key:`` (None): read it as the empty default."""
    return BeforeValidator(lambda v: default if v is None else v)


def _as_list(v: Any) -> Any:
    return [v] if isinstance(v, str | int) and not isinstance(v, bool) else v


Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
Count = Annotated[int, Field(strict=True, ge=1)]
Text = Annotated[str, Field(strict=True, min_length=1)]
ItemName = Annotated[str, Field(strict=True, pattern=NAME_RE.pattern)]


def _class_ref(v: Any) -> str | int:
    if isinstance(v, bool) or not isinstance(v, str | int) or v == "" or (
            isinstance(v, int) and v < 0):
        raise ValueError(f"a class is a name or an id (>= 0), not {v!r}")
    return v


ClassRef = Annotated[str | int, PlainValidator(_class_ref)]
Classes = Annotated[list[ClassRef], BeforeValidator(_as_list), or_default([])]


def _point(v: Any) -> Any:
    if not isinstance(v, list | tuple) or len(v) != 2:
        raise ValueError(f"a point is [x, y] in pixels, not {v!r}")
    return list(v)


PointDoc = Annotated[list[NonNegative], BeforeValidator(_point)]


class ConfigModel(BaseModel):
    """A section of the rules file: unknown keys are refused, the parsed value is frozen (sinks
    write their own sections with it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _points_form(v: Any) -> Any:
    """A zone or line is its points, or ``{points: ..., anchor: ...}``."""
    return {"points": v} if isinstance(v, list | tuple) else v


class _ShapeDoc(ConfigModel):
    points: list[PointDoc]
    anchor: Literal["bottom", "center"] = "bottom"


class ZoneDoc(_ShapeDoc):
    @field_validator("points")
    @classmethod
    def _polygon(cls, points: list[list[float]]) -> list[list[float]]:
        if len(points) < 3:
            raise ValueError("a zone is a list of at least 3 [x, y] points")
        area = 0.5 * abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2)
                             in zip(points, points[1:] + points[:1], strict=True)))
        if area < 1:
            raise ValueError("the polygon has no area")
        return points


class LineDoc(_ShapeDoc):
    @field_validator("points")
    @classmethod
    def _segment(cls, points: list[list[float]]) -> list[list[float]]:
        if len(points) != 2:
            raise ValueError("a line is two [x, y] points: [[x1, y1], [x2, y2]]")
        if math.dist(points[0], points[1]) < 2:
            raise ValueError("the two points are the same")
        return points


class Verify(ConfigModel):
    """Second-stage check of a rule's crops by another ultralytics model (``model``: its path,
    resolved against the rules file's folder)."""

    model: Text
    classes: Classes = []
    threshold: Annotated[float, Field(strict=True, gt=0, le=1, allow_inf_nan=False)] = 0.5
    imgsz: Annotated[int, Field(strict=True, ge=32, multiple_of=32)] = 224
    padding: Annotated[float, Field(strict=True, ge=0, le=2, allow_inf_nan=False)] = 0.1


class _RuleDoc(ConfigModel):
    name: ItemName
    classes: Classes = []
    cooldown_s: NonNegative = 0.0
    min_conf: Fraction = 0.0
    verify: Verify | None = None


class DwellRuleDoc(_RuleDoc):
    type: Literal["dwell"]
    zone: Text
    seconds: NonNegative = 0.0


class CountRuleDoc(_RuleDoc):
    type: Literal["count"]
    zone: Text
    count: Count
    seconds: NonNegative = 0.0


class LineRuleDoc(_RuleDoc):
    type: Literal["line"]
    line: Text
    direction: Literal["any", "up", "down", "left", "right"] = "any"


RuleDoc = Annotated[DwellRuleDoc | CountRuleDoc | LineRuleDoc, Field(discriminator="type")]


class CameraDoc(ConfigModel):
    zones: Annotated[dict[ItemName, Annotated[ZoneDoc, BeforeValidator(_points_form)]],
                     or_default({})] = {}
    lines: Annotated[dict[ItemName, Annotated[LineDoc, BeforeValidator(_points_form)]],
                     or_default({})] = {}
    rules: Annotated[list[RuleDoc], or_default([])] = []


def _timezone(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{tz!r} is not a known time zone (e.g. UTC, Europe/Berlin)") from None
    return tz


def _camera_names(v: Any) -> Any:
    # YAML reads a camera called 1 as an int key; the name is still "1"
    return {str(k): c for k, c in v.items()} if isinstance(v, dict) else v


class _EventsBase(ConfigModel):
    """The file's own sections; each sink (events/sinks/) adds its section to it."""

    cameras: Annotated[dict[Annotated[str, Field(pattern=f"^{CAMERA_NAME_RE.pattern}$")],
                            CameraDoc],
                       BeforeValidator(_camera_names), or_default({})] = {}
    timezone: Annotated[Text, AfterValidator(_timezone)] = "UTC"
    track_timeout_s: Positive = 2.0
    exit_grace_s: NonNegative = 0.5
    clip_margin_s: NonNegative = 2.0


_docs: dict[tuple[tuple[str, Any], ...], type[BaseModel]] = {}


def events_doc() -> type[BaseModel]:
    """The file's schema: its own sections and one per registered sink."""
    fields = tuple((s.key, s.schema) for s in sinks.sinks())
    if fields not in _docs:
        by_key = {s.key: s for s in sinks.sinks()}
        _docs[fields] = create_model("EventsDoc", __base__=_EventsBase,
                                     **{k: (a, by_key[k].default) for k, a in fields})
    return _docs[fields]


# ---- errors: "file: path.to[3].field: what was expected" ------------------------------------

def _where(loc: tuple[str | int, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i and isinstance(loc[i - 1], int) and part in RULE_TYPES:
            continue  # pydantic names the rule type it matched; the path has no such key
        elif part == "[key]":
            continue  # the error is about the key itself, already in the path
        else:
            out += f".{part}" if out else str(part)
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The schema models an annotation can hold (through Annotated, unions, lists, dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    """The keys the file may have where ``loc`` (the unknown key's path) points."""
    models: list[type[BaseModel]] = [events_doc()]
    for i, part in enumerate(loc[:-1]):
        if i and isinstance(loc[i - 1], int) and part in RULE_TYPES:
            models = [m for m in models if "type" in m.model_fields
                      and get_args(m.model_fields["type"].annotation) == (part,)]
        elif isinstance(part, str) and any(part in m.model_fields for m in models):
            models = [x for m in models if part in m.model_fields
                      for x in _models_in(m.model_fields[part].annotation)]
        # else: a list index or a dict key (a camera, zone or line name): same models
    return sorted({k for m in models for k in m.model_fields})


def _why(err: Mapping[str, Any]) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(tuple(err["loc"]))
        return f"unknown key (allowed: {', '.join(allowed)})" if allowed else "unknown key"
    if kind == "missing":
        return "is required"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=",
              "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound:g}" if isinstance(bound, float | int) else err["msg"]
    if kind == "multiple_of":
        return f"must be a multiple of {ctx.get('multiple_of')}"
    if kind == "union_tag_invalid":
        return f"{ctx.get('tag')!r} is not one of {ctx.get('expected_tags', '')}".replace("'", "")
    if kind == "union_tag_not_found":
        return "is required"
    if kind == "literal_error":
        return f"{value!r} is not one of {ctx.get('expected', '')}".replace("'", "")
    if kind == "string_pattern_mismatch":
        return f"{value!r} must match {ctx.get('pattern')}"
    if kind in ("float_type", "int_type", "finite_number", "int_from_float"):
        return f"must be a number{' (an integer)' if kind.startswith('int') else ''}, " \
               f"not {value!r}"
    if kind == "bool_type":
        return f"must be true or false, not {value!r}"
    if kind in ("string_type", "string_too_short"):
        return f"must be a non-empty string, not {value!r}"
    if kind in ("dict_type", "model_type"):
        return f"must be a mapping, not {type(value).__name__}"
    if kind == "list_type":
        return f"must be a list, not {type(value).__name__}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return err["msg"]


def _errors(path: str, exc: ValidationError) -> EventsConfigError:
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc += ("type",)
        where = _where(loc)
        lines.append(f"{path}: {where}: {_why(err)}" if where else f"{path}: {_why(err)}")
    # a value that fits no branch of a union reports each branch: say it once
    return EventsConfigError("\n".join(dict.fromkeys(lines)))


# ---- from the checked document to the service's config -------------------------------------

def _classes(items: list[str | int]) -> tuple[str | int, ...]:
    return tuple(items)


def _pt(p: list[float]) -> Point:
    return (float(p[0]), float(p[1]))


def _camera(path: str, name: str, doc: CameraDoc, base: Path) -> CameraConfig:
    where = f"cameras.{name}"
    zones = {n: Zone(n, tuple(_pt(p) for p in z.points), z.anchor) for n, z in doc.zones.items()}
    lines = {n: Line(n, _pt(ln.points[0]), _pt(ln.points[1]), ln.anchor)
             for n, ln in doc.lines.items()}
    rules: list[Rule] = []
    for i, r in enumerate(doc.rules):
        at = f"{where}.rules[{i}]"
        kw: dict[str, Any] = {"classes": _classes(r.classes), "cooldown_s": r.cooldown_s,
                              "min_conf": r.min_conf}
        if isinstance(r, DwellRuleDoc | CountRuleDoc):
            if r.zone not in zones:
                raise EventsConfigError(
                    f"{path}: {at}.zone: no zone {r.zone!r} on camera {name!r} "
                    f"(zones: {', '.join(sorted(zones)) or 'none'})")
            kw.update(zone=r.zone, seconds=r.seconds)
        if isinstance(r, CountRuleDoc):
            kw["count"] = r.count
        if isinstance(r, LineRuleDoc):
            if r.line not in lines:
                raise EventsConfigError(
                    f"{path}: {at}.line: no line {r.line!r} on camera {name!r} "
                    f"(lines: {', '.join(sorted(lines)) or 'none'})")
            kw.update(line=r.line, direction=r.direction)
        if r.verify is not None:
            model = Path(r.verify.model)
            model = model if model.is_absolute() else base / model
            if not model.exists():
                raise EventsConfigError(f"{path}: {at}.verify.model: {model} does not exist")
            kw["verify"] = r.verify.model_copy(update={"model": str(model)})
        if r.name in {x.name for x in rules}:
            raise EventsConfigError(f"{path}: {at}.name: {r.name!r} is used twice on this camera")
        rules.append(Rule(name=r.name, type=r.type, **kw))
    return CameraConfig(name, zones, lines, tuple(rules))


def parse_config(doc: Any, path: str = "<config>", base: Path | None = None) -> EventsConfig:
    """Validate a parsed document (the file's YAML/JSON) into :class:`EventsConfig`."""
    base = base or Path.cwd()
    try:
        checked = events_doc().model_validate({} if doc is None else doc)
    except ValidationError as exc:
        raise _errors(path, exc) from None
    sections = _sink_sections(path, checked)
    return EventsConfig(
        path=path,
        cameras={n: _camera(path, n, c, base) for n, c in checked.cameras.items()},
        sinks=sections, timezone=checked.timezone,
        track_timeout_s=checked.track_timeout_s, exit_grace_s=checked.exit_grace_s,
        clip_margin_s=checked.clip_margin_s)


def _sink_sections(path: str, checked: BaseModel) -> dict[str, Any]:
    """Each sink's checked section (lists as tuples); receiver names unique across sinks."""
    sections: dict[str, Any] = {}
    owner: dict[str, sinks.Sink] = {}
    for sink in sinks.sinks():
        section = getattr(checked, sink.key)
        section = tuple(section) if isinstance(section, list) else section
        if sink.check is not None:
            sink.check(section, path)
        for name in sink.names(section):
            if name in owner:
                raise EventsConfigError(f"{path}: {owner[name].key}: the name {name!r} is "
                                        f"taken by the {sink.title or sink.key} receiver")
            owner[name] = sink
        sections[sink.key] = section
    return sections


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
