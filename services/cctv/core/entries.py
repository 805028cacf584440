"""The entry schema of every stream: one encoder and one validating decoder per stream.

Producers build entries with ``encode_*`` and consumers read them with ``decode_*`` only, so a
field is spelled, typed and bounded in one place. Stream entries are untrusted input: anyone
with Redis access (a bug, an old version, an operator) can write one. A decoder either returns
a fully typed value or raises :class:`EntryError`, the one exception each consumer catches at its
loop boundary, where the entry costs one counted drop and never the process.

Streams: ``cctv:frames:{cam}`` (:class:`FrameEntry`), ``cctv:det:{cam}`` (:class:`ResultEntry`),
``cctv:drops:{cam}`` (:class:`DropEntry`), ``cctv:events`` (:class:`EventEntry`). The frames
entries are written by the ingest script, the drop records by the fenced scripts
(``core/scripts.py``) and the events by the events store's script (``events/storage.py``), in
the field order given here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_INT64 = 2**63 - 1
#: largest ``dets`` JSON accepted in a result entry (a frame with 300 boxes is ~40 KB)
MAX_DETS_BYTES = 1024 * 1024
#: most detections accepted in one result
MAX_DETS = 1000
#: longest text field (worker id, model name, class name)
MAX_TEXT = 256
#: drop reasons, each counted as ``dropped_<reason>`` in ``cctv:stats:{cam}``
DROP_REASONS = ("behind", "stale", "corrupt", "evicted")

Fields = Mapping[bytes | str, bytes | str]


class EntryError(ValueError):
    """A stream entry that does not match its stream's schema."""


def is_ascii_digits(text: str) -> bool:
    """True for a non-empty string of ASCII digits only (``str.isdigit`` also accepts ``²``)."""
    return text.isascii() and text.isdigit()


def parse_uint(text: str, name: str, maximum: int = MAX_INT64) -> int:
    """``text`` as a non-negative integer of at most ``maximum``; :class:`EntryError` otherwise.

    ``int()`` only runs after the ASCII-digits check, so no Unicode digit, sign, space or
    underscore gets through, and the length check keeps it from parsing a huge string."""
    if not is_ascii_digits(text) or len(text) > len(str(maximum)) or int(text) > maximum:
        raise EntryError(f"{name} must be an integer 0..{maximum}, got {text[:32]!r}")
    return int(text)


def _get(fields: Fields, name: str) -> bytes | None:
    value = fields.get(name.encode())
    if value is None:
        value = fields.get(name)  # type: ignore[call-overload]
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if not isinstance(value, bytes):
        raise EntryError(f"field {name} is not a string")
    return value


def _text(fields: Fields, name: str, *, required: bool = True, max_len: int = MAX_TEXT) -> str:
    raw = _get(fields, name)
    if raw is None:
        if required:
            raise EntryError(f"field {name} is missing")
        return ""
    if len(raw) > max_len:
        raise EntryError(f"field {name} is longer than {max_len} bytes")
    try:
        return raw.decode("ascii" if max_len <= 64 else "utf-8")
    except UnicodeDecodeError:
        raise EntryError(f"field {name} is not text") from None


def _uint(fields: Fields, name: str, maximum: int = MAX_INT64, *, required: bool = True,
          default: int = 0) -> int:
    text = _text(fields, name, required=required, max_len=32)
    if not text and not required:
        return default
    return parse_uint(text, name, maximum)


def _flag(fields: Fields, name: str) -> bool:
    text = _text(fields, name, required=False, max_len=1) or "0"
    if text not in ("0", "1"):
        raise EntryError(f"field {name} must be 0 or 1")
    return text == "1"


def entry_id_ms(entry_id: str) -> int:
    """The millisecond part of a stream entry id ``<ms>-<n>``."""
    ms, sep, n = entry_id.partition("-")
    if not sep or not is_ascii_digits(ms) or not is_ascii_digits(n) or len(ms) > 19:
        raise EntryError(f"not a stream entry id: {entry_id[:40]!r}")
    return int(ms)


def _id_text(entry_id: bytes | str) -> str:
    text = entry_id.decode("ascii", "replace") if isinstance(entry_id, bytes) else str(entry_id)
    entry_id_ms(text)
    return text


def seq_of(fields: Fields) -> str:
    """The entry's ``seq`` when it is a valid one, else ``""`` (for the drop record of an
    entry that does not decode: the record always has the id, and the seq when there is one)."""
    raw = fields.get(b"seq", fields.get("seq"))  # type: ignore[call-overload]
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    if not isinstance(raw, str):
        return ""
    try:
        return str(parse_uint(raw, "seq"))
    except EntryError:
        return ""


# ---- cctv:frames:{cam} -------------------------------------------------------------------------

#: field order of a frames entry after ``jpeg`` (the ingest script writes them in this order)
FRAME_FIELDS = ("jpeg", "ts", "seq", "w", "h", "rx", "late")


@dataclass(frozen=True)
class FrameEntry:
    """One frame as ingest stored it."""

    id: str
    seq: int
    ts: int
    w: int
    h: int
    rx: int
    late: bool
    jpeg: bytes = field(repr=False)

    @property
    def id_ms(self) -> int:
        """Redis server time (ms) when the frame was stored."""
        return entry_id_ms(self.id)


def encode_frame(jpeg: bytes, *, seq: int, ts: int, w: int, h: int, rx: int,
                 late: bool) -> list[bytes | str]:
    """The flat field list of a frames entry (``XADD key * <fields>``)."""
    return ["jpeg", jpeg, "ts", str(ts), "seq", str(seq), "w", str(w), "h", str(h),
            "rx", str(rx), "late", "1" if late else "0"]


def decode_frame(entry_id: bytes | str, fields: Fields, max_bytes: int) -> FrameEntry:
    """A frames entry, validated: every field present and typed, the JPEG non-empty and at most
    ``max_bytes`` (the JPEG itself is checked when it is decoded)."""
    eid = _id_text(entry_id)
    jpeg = _get(fields, "jpeg")
    if not jpeg:
        raise EntryError("field jpeg is missing or empty")
    if len(jpeg) > max_bytes:
        raise EntryError(f"field jpeg has {len(jpeg)} bytes, over the {max_bytes} limit")
    return FrameEntry(eid, _uint(fields, "seq"), _uint(fields, "ts"), _uint(fields, "w", 65535),
                      _uint(fields, "h", 65535), _uint(fields, "rx", required=False),
                      _flag(fields, "late"), jpeg)


# ---- cctv:det:{cam} ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Detection:
    """One detected object of a result: class id and name, confidence, box in frame pixels,
    and the track id when the leader tracks."""

    cls: int
    name: str
    conf: float
    xyxy: tuple[float, float, float, float]
    track: int | None = None

    def to_json(self) -> dict:
        """The detection as written in ``dets``."""
        out: dict = {"cls": self.cls, "name": self.name, "conf": self.conf,
                     "xyxy": list(self.xyxy)}
        if self.track is not None:
            out["track"] = self.track
        return out


@dataclass(frozen=True)
class ResultEntry:
    """One inference result."""

    id: str
    frame: str
    seq: int
    ts: int
    rx: int
    pick: int
    done: int
    w: int
    h: int
    late: bool
    dets: tuple[Detection, ...]
    epoch: int
    worker: str
    model: str
    infer_ms: float

    @property
    def ts_ms(self) -> float:
        """Capture time in ms (sender clock)."""
        return self.ts / 1000

    def dets_json(self) -> list[dict]:
        """``dets`` as plain dicts (the API and the rules engine work on these)."""
        return [d.to_json() for d in self.dets]

    def to_json(self) -> dict:
        """Every field as JSON types (numbers as numbers, ``late`` a bool, ``dets`` a list)."""
        return {"id": self.id, "frame": self.frame, "seq": self.seq, "ts": self.ts,
                "rx": self.rx, "pick": self.pick, "done": self.done, "w": self.w, "h": self.h,
                "late": self.late, "dets": self.dets_json(), "epoch": self.epoch,
                "worker": self.worker, "model": self.model, "infer_ms": self.infer_ms}


def encode_result(*, frame: str, seq: int | str, ts: int | str, rx: int | str, pick: int,
                  done: int, w: int, h: int, late: bool | str, dets: list[dict], epoch: int,
                  worker: str, model: str, infer_ms: float) -> list[str | int]:
    """The flat field list of a results entry (given to the fenced publish script)."""
    late_flag = late if isinstance(late, bool) else late == "1"
    return ["frame", frame, "seq", str(seq), "ts", str(ts), "rx", str(rx), "pick", str(pick),
            "done", str(done), "w", str(w), "h", str(h), "late", "1" if late_flag else "0",
            "dets", json.dumps(dets, separators=(",", ":")), "epoch", str(epoch),
            "worker", worker, "model", model, "infer_ms", f"{infer_ms:.2f}"]


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or abs(value) > 1e9:
        raise EntryError(f"detection {name} is not a finite number")
    return float(value)


def _detection(d: object) -> Detection:
    if not isinstance(d, dict):
        raise EntryError("a detection is not an object")
    cls, name, conf, xyxy, track = (d.get("cls"), d.get("name"), d.get("conf"), d.get("xyxy"),
                                    d.get("track"))
    if isinstance(cls, bool) or not isinstance(cls, int) or not 0 <= cls <= 100_000:
        raise EntryError("detection cls is not a class id")
    if name is None:
        name = str(cls)
    if not isinstance(name, str) or len(name) > MAX_TEXT:
        raise EntryError("detection name is not a short string")
    conf_f = _number(conf, "conf")
    if not 0.0 <= conf_f <= 1.0:
        raise EntryError("detection conf is not in 0..1")
    if not isinstance(xyxy, list) or len(xyxy) != 4:
        raise EntryError("detection xyxy is not 4 numbers")
    box = tuple(_number(v, "xyxy") for v in xyxy)
    if track is not None and (isinstance(track, bool) or not isinstance(track, int)
                              or not 0 <= track <= MAX_INT64):
        raise EntryError("detection track is not a track id")
    return Detection(cls, name, conf_f, box, track)  # type: ignore[arg-type]


def decode_dets(raw: bytes | str) -> tuple[Detection, ...]:
    """The ``dets`` JSON of a result, validated."""
    if len(raw) > MAX_DETS_BYTES:
        raise EntryError(f"dets is over {MAX_DETS_BYTES} bytes")
    try:
        dets = json.loads(raw)
    except (ValueError, RecursionError):
        raise EntryError("dets is not JSON") from None
    if not isinstance(dets, list) or len(dets) > MAX_DETS:
        raise EntryError(f"dets is not a list of at most {MAX_DETS} detections")
    return tuple(_detection(d) for d in dets)


def decode_result(entry_id: bytes | str, fields: Fields) -> ResultEntry:
    """A results entry, validated (every field present and typed, every detection checked)."""
    eid = _id_text(entry_id)
    frame = _text(fields, "frame", max_len=41)
    entry_id_ms(frame)
    infer_text = _text(fields, "infer_ms", max_len=32)
    try:
        infer_ms = float(infer_text)
    except ValueError:
        raise EntryError("infer_ms is not a number") from None
    if not math.isfinite(infer_ms) or infer_ms < 0:
        raise EntryError("infer_ms is not a finite non-negative number")
    dets_raw = _get(fields, "dets")
    if dets_raw is None:
        raise EntryError("field dets is missing")
    return ResultEntry(
        eid, frame, _uint(fields, "seq"), _uint(fields, "ts"), _uint(fields, "rx"),
        _uint(fields, "pick"), _uint(fields, "done"), _uint(fields, "w", 65535),
        _uint(fields, "h", 65535), _flag(fields, "late"), decode_dets(dets_raw),
        _uint(fields, "epoch"), _text(fields, "worker"), _text(fields, "model"), infer_ms)


# ---- cctv:drops:{cam} --------------------------------------------------------------------------

@dataclass(frozen=True)
class DropEntry:
    """One drop record: the frames (ids, and seqs where known) acked without a result."""

    id: str
    reason: str
    ids: tuple[str, ...]
    seqs: tuple[int | None, ...]
    epoch: int | None
    worker: str


def decode_drop(entry_id: bytes | str, fields: Fields) -> DropEntry:
    """A drop record, validated; a seq the frame did not have is ``None``."""
    eid = _id_text(entry_id)
    reason = _text(fields, "reason", max_len=16)
    if reason not in DROP_REASONS:
        raise EntryError(f"unknown drop reason {reason!r}")
    ids_text = _text(fields, "ids", max_len=64 * 100_000)
    ids = tuple(i for i in ids_text.split(",") if i)
    for i in ids:
        entry_id_ms(i)
    seqs_text = _text(fields, "seqs", max_len=20 * 100_000)
    seqs = tuple(parse_uint(s, "seq") if s else None for s in seqs_text.split(",")) \
        if ids else ()
    if len(seqs) != len(ids):
        raise EntryError("drop record has not one seq per id")
    epoch_text = _text(fields, "epoch", required=False, max_len=20)
    epoch = parse_uint(epoch_text, "epoch") if epoch_text else None
    return DropEntry(eid, reason, ids, seqs, epoch, _text(fields, "worker", max_len=MAX_TEXT))


# ---- cctv:events -------------------------------------------------------------------------------

#: the fields of an events entry, in the order the events store's script writes them
EVENT_FIELDS = ("type", "id", "camera", "rule", "event")
#: entry types: an event's start and end (rules with a duration), or an instant event
EVENT_TYPES = ("event.start", "event.end", "event")
#: largest ``event`` JSON accepted (a record with its subjects and caption is a few KB)
MAX_EVENT_BYTES = 256 * 1024


@dataclass(frozen=True)
class EventEntry:
    """One entry of the events stream: the stored event record and what happened to it."""

    id: str
    type: str
    event_id: str
    camera: str
    rule: str
    record: dict


def decode_event(entry_id: bytes | str, fields: Fields) -> EventEntry:
    """An events entry, validated: a known type, the record as a JSON object naming the same
    event, camera and rule, and its times numbers (or absent)."""
    eid = _id_text(entry_id)
    etype = _text(fields, "type", max_len=16)
    if etype not in EVENT_TYPES:
        raise EntryError(f"unknown event entry type {etype!r}")
    event_id, camera = _text(fields, "id", max_len=64), _text(fields, "camera", max_len=64)
    rule = _text(fields, "rule")
    raw = _get(fields, "event")
    if raw is None or len(raw) > MAX_EVENT_BYTES:
        raise EntryError("field 'event' missing or over its size limit")
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        raise EntryError("field 'event' is not JSON") from None
    if not isinstance(record, dict):
        raise EntryError("field 'event' is not a JSON object")
    if (record.get("id"), record.get("camera"), record.get("rule")) != (event_id, camera, rule):
        raise EntryError("the event record names another event, camera or rule than its entry")
    for name in ("start_ms", "end_ms"):
        value = record.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not 0 <= value < 1e14):  # ms since 1970, finite
            raise EntryError(f"event field {name!r} is not a time in ms")
    for name in ("snapshot", "crop"):
        if not isinstance(record.get(name, ""), str):
            raise EntryError(f"event field {name!r} is not a path")
    return EventEntry(eid, etype, event_id, camera, rule, record)
