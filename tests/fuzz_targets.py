"""Fuzz targets: the JPEG header parser, the safe decoder and every stream entry decoder.

Each target takes one generated input and fails (raises ``AssertionError`` or an unexpected
exception) only when the code under test does something other than return a valid value or
raise its one documented error. ``tests/test_fuzz.py`` runs them under hypothesis with a small
budget; ``bench/fuzz.py`` runs them for 100,000+ cases.
"""

from __future__ import annotations

import json
import math

from hypothesis import strategies as st

from cctv.core.entries import (
    DROP_REASONS,
    EVENT_TYPES,
    EntryError,
    decode_drop,
    decode_event,
    decode_frame,
    decode_result,
    encode_frame,
    encode_result,
    parse_uint,
)
from cctv.core.jpeg import FrameLimits, JpegError, jpeg_info

LIMITS = FrameLimits(4096, 4096, 8 * 1024 * 1024)
MAX_BYTES = 200_000


def tiny_jpegs() -> list[bytes]:
    """Small real JPEGs (baseline colour, progressive, grey) to mutate."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    out = [cv2.imencode(".jpg", img)[1].tobytes(),
           cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes(),
           cv2.imencode(".jpg", img[:, :, 0])[1].tobytes()]
    return out


SEEDS = tiny_jpegs()


@st.composite
def mutated_jpegs(draw: st.DrawFn) -> bytes:
    """A real JPEG with a few bytes overwritten, inserted, removed or the tail cut."""
    b = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["set", "insert", "delete", "cut", "header"]))
        i = draw(st.integers(0, max(0, len(b) - 1)))
        if op == "set":
            b[i] = draw(st.integers(0, 255))
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del b[i:i + draw(st.integers(1, 8))]
        elif op == "cut":
            b = b[:i] + b"\xff\xd9"
        else:  # somewhere in the first 200 bytes: the markers and the frame header
            b[min(i, 199) % max(1, len(b))] = draw(st.integers(0, 255))
    return bytes(b)


def jpeg_bytes() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, bytes between SOI and EOI, and mutated real JPEGs."""
    return st.one_of(st.binary(max_size=300),
                     st.binary(max_size=300).map(lambda b: b"\xff\xd8" + b + b"\xff\xd9"),
                     mutated_jpegs())


def check_jpeg_info(data: bytes) -> None:
    """jpeg_info returns a header within the limits or raises JpegError; nothing else."""
    try:
        info = jpeg_info(data, LIMITS)
    except JpegError as exc:
        assert exc.kind in ("malformed", "unsupported", "too_large")
        return
    assert 0 < info.width <= LIMITS.max_width and 0 < info.height <= LIMITS.max_height
    assert info.width * info.height <= LIMITS.max_pixels
    assert info.components in (1, 3)


def check_decode_jpeg(data: bytes) -> None:
    """decode_jpeg returns a BGR image of the header's size or raises JpegError."""
    from cctv.core.jpeg_decode import decode_jpeg

    try:
        img = decode_jpeg(data, LIMITS)
    except JpegError:
        return
    assert img.ndim == 3 and img.shape[2] == 3
    assert img.shape[0] * img.shape[1] <= LIMITS.max_pixels


# ---- stream entries -------------------------------------------------------------------------

_TEXTS = st.one_of(st.text(max_size=24).map(str.encode), st.binary(max_size=24),
                   st.integers(-2**70, 2**70).map(lambda n: str(n).encode()),
                   st.sampled_from([b"", b"0", b"1", b"\xc2\xb2", b"nan", b"inf", b"1e3",
                                    b" 1", b"1_000", b"9" * 30, b"1-0", b"-", b"0-0"]))


def _entry(base: dict[str, bytes], names: tuple[str, ...]) -> st.SearchStrategy[dict]:
    """Entries made from a valid ``base``: fields replaced, removed or added at random."""
    return st.fixed_dictionaries({}, optional={
        n: st.one_of(st.just(base[n]), _TEXTS) if n in base else _TEXTS for n in names})


def _flat_to_fields(flat: list) -> dict[bytes, bytes]:
    return {str(k).encode(): v if isinstance(v, bytes) else str(v).encode()
            for k, v in zip(flat[::2], flat[1::2], strict=True)}


GOOD_FRAME = _flat_to_fields(encode_frame(SEEDS[0], seq=5, ts=1_700_000_000_000_000, w=32, h=24,
                                          rx=1_700_000_000_000_100, late=False))
GOOD_RESULT = _flat_to_fields(encode_result(
    frame="1700000000000-0", seq=5, ts=1, rx=2, pick=3, done=4, w=32, h=24, late=True,
    dets=[{"cls": 1, "name": "car", "conf": 0.5, "xyxy": [1, 2, 3, 4], "track": 9}], epoch=2,
    worker="w", model="m", infer_ms=1.5))
GOOD_DROP = {b"reason": b"corrupt", b"ids": b"1-0,2-0", b"seqs": b"5,", b"epoch": b"3",
             b"worker": b"a"}

GOOD_EVENT = {b"type": b"event", b"id": b"ev1", b"camera": b"cam1", b"rule": b"cars",
              b"event": json.dumps({"id": "ev1", "camera": "cam1", "rule": "cars",
                                    "start_ms": 1_700_000_000_000, "end_ms": None,
                                    "snapshot": "cam1/ev1.jpg", "crop": ""}).encode()}

entry_ids = st.one_of(st.just(b"1700000000000-0"), _TEXTS)
frame_entries = _entry({k.decode(): v for k, v in GOOD_FRAME.items()},
                       ("jpeg", "seq", "ts", "w", "h", "rx", "late", "extra"))
drop_entries = _entry({k.decode(): v for k, v in GOOD_DROP.items()},
                      ("reason", "ids", "seqs", "epoch", "worker"))

event_entries = _entry({k.decode(): v for k, v in GOOD_EVENT.items()},
                       ("type", "id", "camera", "rule", "event"))

_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**65, 2**65), st.floats(),
              st.text(max_size=8)),
    lambda kids: st.one_of(st.lists(kids, max_size=4),
                           st.dictionaries(st.sampled_from(["cls", "name", "conf", "xyxy",
                                                            "track", "x"]), kids, max_size=5)),
    max_leaves=20)
_dets = st.one_of(_TEXTS, _json_values.map(lambda v: json.dumps(v).encode()),
                  st.lists(st.fixed_dictionaries({}, optional={
                      "cls": _json_values, "name": _json_values, "conf": _json_values,
                      "xyxy": st.one_of(_json_values, st.lists(st.floats(), max_size=5)),
                      "track": _json_values}), max_size=3).map(lambda v: json.dumps(v).encode()))
result_entries = st.builds(
    lambda base, dets: {**base, **({"dets": dets} if dets is not None else {})},
    _entry({k.decode(): v for k, v in GOOD_RESULT.items()},
           ("frame", "seq", "ts", "rx", "pick", "done", "w", "h", "late", "epoch", "worker",
            "model", "infer_ms")),
    st.one_of(st.none(), st.just(GOOD_RESULT[b"dets"]), _dets))


def _bytes_keys(fields: dict) -> dict[bytes, bytes]:
    return {k.encode(): v for k, v in fields.items()}


def check_frame_entry(entry_id: bytes, fields: dict) -> None:
    try:
        f = decode_frame(entry_id, _bytes_keys(fields), MAX_BYTES)
    except EntryError:
        return
    assert 0 <= f.seq < 2**63 and 0 <= f.ts < 2**63 and 0 <= f.w <= 65535
    assert 0 < len(f.jpeg) <= MAX_BYTES and isinstance(f.late, bool)


def check_result_entry(entry_id: bytes, fields: dict) -> None:
    try:
        r = decode_result(entry_id, _bytes_keys(fields))
    except EntryError:
        return
    assert 0 <= r.seq < 2**63 and 0 <= r.w <= 65535 and math.isfinite(r.infer_ms)
    for d in r.dets:
        assert all(math.isfinite(v) for v in d.xyxy) and 0 <= d.conf <= 1
        assert d.track is None or isinstance(d.track, int)
    json.dumps(r.to_json(), allow_nan=False)  # the API can always serve it


def check_drop_entry(entry_id: bytes, fields: dict) -> None:
    try:
        d = decode_drop(entry_id, _bytes_keys(fields))
    except EntryError:
        return
    assert d.reason in DROP_REASONS and len(d.ids) == len(d.seqs)


def check_event_entry(entry_id: bytes, fields: dict) -> None:
    try:
        e = decode_event(entry_id, _bytes_keys(fields))
    except EntryError:
        return
    assert e.type in EVENT_TYPES and isinstance(e.record, dict)
    assert e.record["id"] == e.event_id and e.record["camera"] == e.camera


def check_parse_uint(text: str) -> None:
    try:
        n = parse_uint(text, "x")
    except EntryError:
        return
    assert str(n) == text.lstrip("0").rjust(1, "0") and 0 <= n < 2**63
