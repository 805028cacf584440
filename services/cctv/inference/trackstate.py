"""The saved tracker state (``cctv:track:{cam}``): a plain, versioned format, validated on load.

Layout (all little-endian)::

    b"cctvtrk"  version (1 byte)  header length (4 bytes)  header (JSON, UTF-8)  floats

* header: ``{"kind", "frame", "next_id", "last_ts_us", "gaps_us", "tracks"}``; ``tracks`` is a
  list of ``[id, state, confirmed, revived, score, cls, frame, start, length]``;
* floats: per track its Kalman mean (8) and covariance (64) as float64, in the order of
  ``tracks``.

Nothing here constructs anything but ints, floats, strings, lists and float64 arrays:
:func:`decode` checks the size, the magic and version, every field's type and range, that the
floats are finite and bounded and each covariance symmetric positive semi-definite (a bad one
would break the Kalman filter's solve later), and raises :class:`BadTrackState` with a short
reason for anything else.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

import numpy as np

from cctv.inference.bytetrack import KINDS, LOST, REMOVED, TRACKED, ByteTracker, Track

MAGIC = b"cctvtrk"
VERSION = 2  # version 1 was a pickle (older releases); it is refused like any other format
_HEAD = struct.Struct("<7sBI")
#: the most bytes a saved state may have (one camera's tracks: ~600 bytes each)
MAX_BYTES = 2 * 1024 * 1024
MAX_TRACKS = 2000
MAX_GAPS = 15
#: ids, frame numbers and timestamps stay exact in JSON and in every consumer
MAX_INT = 2 ** 53 - 1
#: coordinates, velocities and variances beyond this are not from a camera
MAX_FLOAT = 1e12
_FLOATS_PER_TRACK = 8 + 64
_KEYS = {"kind", "frame", "next_id", "last_ts_us", "gaps_us", "tracks"}


class BadTrackState(ValueError):
    """A saved tracker state that cannot be used; ``reason`` is a short label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class SavedState:
    """A decoded state: the tracker and the gap statistics of its camera."""

    tracker: ByteTracker
    last_ts_us: int | None
    gaps_us: list[int] = field(default_factory=list)


def encode(tracker: ByteTracker, last_ts_us: int | None, gaps_us: list[int]) -> bytes:
    """The bytes of ``tracker``'s state (see the module docstring)."""
    tracks = tracker.tracked + tracker.lost
    header = {"kind": tracker.kind, "frame": tracker.frame, "next_id": tracker.next_id,
              "last_ts_us": last_ts_us, "gaps_us": [int(g) for g in gaps_us][-MAX_GAPS:],
              "tracks": [[t.id, t.state, t.confirmed, t.revived, t.score, t.cls, t.frame,
                          t.start, t.length] for t in tracks]}
    head = json.dumps(header, separators=(",", ":")).encode()
    floats = np.empty((len(tracks), _FLOATS_PER_TRACK), "<f8")
    for i, t in enumerate(tracks):
        floats[i, :8] = t.mean
        floats[i, 8:] = t.cov.reshape(64)
    return _HEAD.pack(MAGIC, VERSION, len(head)) + head + floats.tobytes()


def _int(v: object, what: str, lo: int = 0, hi: int = MAX_INT) -> int:
    if type(v) is not int or not lo <= v <= hi:  # bool is not an int here
        raise BadTrackState("values", f"{what} must be an integer in [{lo}, {hi}]")
    return v


def _float(v: object, what: str, lo: float, hi: float) -> float:
    if type(v) not in (int, float) or not lo <= v <= hi:
        raise BadTrackState("values", f"{what} must be a number in [{lo}, {hi}]")
    return float(v)


def _bool(v: object, what: str) -> bool:
    if type(v) is not bool:
        raise BadTrackState("values", f"{what} must be true or false")
    return v


def _header(blob: bytes) -> tuple[dict, memoryview]:
    if len(blob) > MAX_BYTES:
        raise BadTrackState("too_large", f"{len(blob)} bytes (at most {MAX_BYTES})")
    if len(blob) < _HEAD.size:
        raise BadTrackState("format", "too short")
    magic, version, n = _HEAD.unpack_from(blob)
    if magic != MAGIC:
        raise BadTrackState("format", "not a tracker state")
    if version != VERSION:
        raise BadTrackState("version", f"version {version}, this release reads {VERSION}")
    if n > len(blob) - _HEAD.size:
        raise BadTrackState("format", "truncated header")
    try:
        header = json.loads(bytes(blob[_HEAD.size:_HEAD.size + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadTrackState("format", f"header is not JSON ({exc.__class__.__name__})") from None
    if type(header) is not dict or set(header) != _KEYS:
        raise BadTrackState("values", f"header must have exactly the keys {sorted(_KEYS)}")
    return header, memoryview(blob)[_HEAD.size + n:]


def _floats(data: memoryview, n: int) -> np.ndarray:
    if len(data) != n * _FLOATS_PER_TRACK * 8:
        raise BadTrackState("format", f"{len(data)} bytes of floats for {n} tracks")
    # frombuffer reads plain float64: no object is ever constructed from these bytes
    arr = np.frombuffer(bytes(data), "<f8").reshape(n, _FLOATS_PER_TRACK).astype(np.float64)
    if not np.isfinite(arr).all() or np.abs(arr).max(initial=0) > MAX_FLOAT:
        raise BadTrackState("values", "a Kalman state is not finite or out of range")
    return arr


def _kalman(mean: np.ndarray, cov: np.ndarray, tid: int) -> None:
    if mean[3] <= 0 or mean[2] <= 0:
        raise BadTrackState("values", f"track {tid}: box size must be positive")
    scale = max(1.0, float(np.abs(cov).max()))
    if np.abs(cov - cov.T).max() > 1e-6 * scale:
        raise BadTrackState("values", f"track {tid}: covariance is not symmetric")
    if np.linalg.eigvalsh((cov + cov.T) / 2).min() < -1e-6 * scale:
        raise BadTrackState("values", f"track {tid}: covariance is not positive semi-definite")


def decode(blob: bytes, kind: str, track_buffer: int) -> SavedState:
    """The state in ``blob`` as a ``kind`` tracker; :class:`BadTrackState` when unusable."""
    h, data = _header(blob)
    if h["kind"] != kind:
        raise BadTrackState("kind", f"saved by a {str(h['kind'])[:20]!r} tracker, this one is "
                                    f"{kind}")
    if kind not in KINDS:
        raise BadTrackState("kind", f"unknown tracker {kind!r}")
    frame = _int(h["frame"], "frame")
    next_id = _int(h["next_id"], "next_id", 1)
    last = h["last_ts_us"]
    last_ts_us = None if last is None else _int(last, "last_ts_us")
    gaps = h["gaps_us"]
    if type(gaps) is not list or len(gaps) > MAX_GAPS:
        raise BadTrackState("values", f"gaps_us must be a list of at most {MAX_GAPS}")
    gaps_us = [_int(g, "gaps_us[]", 1, 5_000_000) for g in gaps]
    rows = h["tracks"]
    if type(rows) is not list or len(rows) > MAX_TRACKS:
        raise BadTrackState("values", f"tracks must be a list of at most {MAX_TRACKS}")
    floats = _floats(data, len(rows))
    tracker = ByteTracker(kind, track_buffer)
    tracker.frame, tracker.next_id = frame, next_id
    seen: set[int] = set()
    for i, row in enumerate(rows):
        if type(row) is not list or len(row) != 9:
            raise BadTrackState("values", f"tracks[{i}] must be a list of 9")
        tid = _int(row[0], "track id", 1, next_id - 1)
        if tid in seen:
            raise BadTrackState("values", f"track id {tid} twice")
        seen.add(tid)
        state = _int(row[1], "track state", TRACKED, REMOVED)
        last_frame = _int(row[6], "track frame", 0, frame)
        start = _int(row[7], "track start", 0, last_frame)
        t = Track(tid, state, _bool(row[2], "confirmed"), _float(row[4], "score", 0.0, 1.0),
                  _int(row[5], "class", 0, 1_000_000), last_frame, start,
                  _int(row[8], "track length", 0, frame), floats[i, :8].copy(),
                  floats[i, 8:].reshape(8, 8).copy(), revived=_bool(row[3], "revived"))
        _kalman(t.mean, t.cov, tid)
        (tracker.tracked if state == TRACKED else tracker.lost).append(t)
    if any(t.state == LOST and not t.confirmed for t in tracker.lost):
        raise BadTrackState("values", "a lost track was never confirmed")
    return SavedState(tracker, last_ts_us, gaps_us)
