"""Hostile frames and stream entries for the poison tests and ``bench/poison.py``.

Every forged JPEG is made from a real encoded frame by rewriting bytes of its frame header, its
scan or its markers, so each case differs from a good frame in exactly the way its name says.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import cv2
import numpy as np

SOI, EOI = b"\xff\xd8", b"\xff\xd9"


def encode(img: np.ndarray, progressive: bool = False, quality: int = 80) -> bytes:
    """``img`` as a JPEG (baseline, or progressive)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    if progressive:
        params += [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    ok, buf = cv2.imencode(".jpg", img, params)
    assert ok
    return buf.tobytes()


def segments(jpeg: bytes) -> list[tuple[int, int, int]]:
    """``(marker, start, end)`` of each marker segment up to and including the first SOS."""
    out, i = [], 2
    while i + 4 <= len(jpeg):
        marker = jpeg[i + 1]
        length = int.from_bytes(jpeg[i + 2:i + 4], "big")
        out.append((marker, i, i + 2 + length))
        if marker == 0xDA:
            break
        i += 2 + length
    return out


def _sof(jpeg: bytes) -> tuple[int, int]:
    for marker, start, end in segments(jpeg):
        if marker in (0xC0, 0xC1, 0xC2):
            return start, end
    raise ValueError("no SOF")


def _sos_end(jpeg: bytes) -> int:
    return next(end for marker, _s, end in segments(jpeg) if marker == 0xDA)


def patch_sof(jpeg: bytes, *, width: int | None = None, height: int | None = None,
              marker: int | None = None, precision: int | None = None,
              components: int | None = None, sampling: int | None = None) -> bytes:
    """``jpeg`` with fields of its frame header replaced (the segment keeps its length)."""
    start, _end = _sof(jpeg)
    b = bytearray(jpeg)
    if marker is not None:
        b[start + 1] = marker
    if precision is not None:
        b[start + 4] = precision
    if height is not None:
        b[start + 5:start + 7] = height.to_bytes(2, "big")
    if width is not None:
        b[start + 7:start + 9] = width.to_bytes(2, "big")
    if components is not None:
        b[start + 9] = components
    if sampling is not None:
        b[start + 11] = sampling
    return bytes(b)


def second_sof_before_scan(jpeg: bytes) -> bytes:
    start, end = _sof(jpeg)
    return jpeg[:end] + jpeg[start:end] + jpeg[end:]


def second_sof_after_scan(jpeg: bytes) -> bytes:
    start, end = _sof(jpeg)
    body = jpeg[:-2]
    return body + jpeg[start:end] + EOI


def without_sof(jpeg: bytes) -> bytes:
    start, end = _sof(jpeg)
    return jpeg[:start] + jpeg[end:]


def header_only(jpeg: bytes) -> bytes:
    """Every segment before the scan, then EOI: no image data."""
    return jpeg[:_sof(jpeg)[1]] + EOI


def truncated_scan(jpeg: bytes, keep: float, with_eoi: bool = True) -> bytes:
    cut = _sos_end(jpeg) + int((len(jpeg) - _sos_end(jpeg)) * keep)
    return jpeg[:cut] + (EOI if with_eoi else b"")


def corrupted_scan(jpeg: bytes, seed: int, fraction: float = 0.2) -> bytes:
    """``jpeg`` with a fraction of its entropy-coded bytes replaced by random ones (never 0xFF
    and never the byte after one, so no marker appears or goes)."""
    rng = random.Random(seed)
    b = bytearray(jpeg)
    lo, hi = _sos_end(jpeg), len(jpeg) - 2
    for _ in range(int((hi - lo) * fraction)):
        i = rng.randrange(lo, hi)
        if b[i] != 0xFF and b[i - 1] != 0xFF:
            b[i] = rng.randrange(0, 255)
    return bytes(b)


def zeroed_scan(jpeg: bytes) -> bytes:
    lo = _sos_end(jpeg)
    return jpeg[:lo] + bytes(len(jpeg) - lo - 2) + EOI


def segment_past_end(jpeg: bytes) -> bytes:
    start, _end = _sof(jpeg)
    b = bytearray(jpeg)
    b[start + 2:start + 4] = (0xFFF0).to_bytes(2, "big")
    return bytes(b)


def tiny_huge_jpeg() -> bytes:
    """The ~600-byte JPEG whose frame header claims 65500x65500."""
    return patch_sof(encode(np.zeros((16, 16, 3), np.uint8)), width=65500, height=65500)


@dataclass(frozen=True)
class BodyCase:
    """A request body / ``jpeg`` field, and the statuses ingest may answer it with (202 means
    it is stored, and must then be processed or counted by the consumers)."""

    name: str
    body: bytes = field(repr=False)
    ingest: frozenset[int]


def body_cases(good: bytes, max_frame_bytes: int) -> list[BodyCase]:
    """Forged frame headers, unsupported variants, broken scans, non-JPEG and oversized
    bodies, made from the good frame ``good`` (640x480 baseline)."""
    img = cv2.imdecode(np.frombuffer(good, np.uint8), cv2.IMREAD_COLOR)
    progressive = encode(img, progressive=True)
    grey = encode(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    bad, refused, unsupported, too_big = (frozenset({400}), frozenset({400, 413, 415}),
                                          frozenset({415}), frozenset({413}))
    either = frozenset({202, 400, 413, 415})
    cases = [
        BodyCase("huge_65500x65500", tiny_huge_jpeg(), too_big),
        BodyCase("huge_width", patch_sof(good, width=65500), too_big),
        BodyCase("huge_height", patch_sof(good, height=65500), too_big),
        BodyCase("over_pixels_5000x4000", patch_sof(good, width=5000, height=4000), too_big),
        BodyCase("over_side_9000x100", patch_sof(good, width=9000, height=100), too_big),
        BodyCase("zero_width", patch_sof(good, width=0), bad),
        BodyCase("zero_height", patch_sof(good, height=0), bad),
        BodyCase("smaller_than_data_320x240", patch_sof(good, width=320, height=240), either),
        BodyCase("larger_than_data_1280x960", patch_sof(good, width=1280, height=960), either),
        BodyCase("odd_size_641x481", patch_sof(good, width=641, height=481), either),
        BodyCase("two_sof_before_scan", second_sof_before_scan(good), unsupported),
        BodyCase("sof_after_scan", second_sof_after_scan(good), unsupported),
        BodyCase("progressive_real", progressive, frozenset({202})),
        BodyCase("progressive_two_sof", second_sof_before_scan(progressive), unsupported),
        BodyCase("progressive_truncated", truncated_scan(progressive, 0.4), either),
        BodyCase("grey_real", grey, frozenset({202})),
        BodyCase("arithmetic_sof9", patch_sof(good, marker=0xC9), unsupported),
        BodyCase("arithmetic_progressive_sof10", patch_sof(good, marker=0xCA), unsupported),
        BodyCase("lossless_sof3", patch_sof(good, marker=0xC3), unsupported),
        BodyCase("hierarchical_sof5", patch_sof(good, marker=0xC5), unsupported),
        BodyCase("baseline_as_progressive_sof2", patch_sof(good, marker=0xC2), either),
        BodyCase("precision_12", patch_sof(good, precision=12), unsupported),
        BodyCase("components_4", patch_sof(good, components=4), unsupported),
        BodyCase("components_255", patch_sof(good, components=255), unsupported),
        BodyCase("components_0", patch_sof(good, components=0), unsupported),
        BodyCase("components_1_of_3", patch_sof(good, components=1), bad),
        BodyCase("sampling_0", patch_sof(good, sampling=0x00), bad),
        BodyCase("truncated_scan_half", truncated_scan(good, 0.5), either),
        BodyCase("truncated_scan_tiny", truncated_scan(good, 0.01), either),
        BodyCase("truncated_no_eoi", truncated_scan(good, 0.5, with_eoi=False), bad),
        BodyCase("corrupted_scan", corrupted_scan(good, 1), either),
        BodyCase("corrupted_scan_heavy", corrupted_scan(good, 2, 0.9), either),
        BodyCase("zeroed_scan", zeroed_scan(good), either),
        BodyCase("scan_before_sof", without_sof(good), bad),
        BodyCase("header_only", header_only(good), bad),
        BodyCase("segment_past_end", segment_past_end(good), bad),
        BodyCase("soi_eoi_only", SOI + EOI, bad),
        BodyCase("png", cv2.imencode(".png", img)[1].tobytes(), bad),
        BodyCase("random_bytes", random.Random(3).randbytes(5000), bad),
        BodyCase("text", b"hello, this is not a picture", bad),
        BodyCase("jpeg_markers_around_junk", SOI + random.Random(4).randbytes(3000) + EOI,
                 refused),
        BodyCase("oversized", good + bytes(max_frame_bytes), frozenset({413})),
    ]
    assert len({c.name for c in cases}) == len(cases)
    return cases


@dataclass(frozen=True)
class HeaderCase:
    """Junk in the request headers, and the same junk in a directly written stream entry's
    fields (``fields`` replace the good entry's; None removes a field)."""

    name: str
    headers: dict[str, str | bytes | None]
    fields: dict[str, bytes | None]
    ingest: frozenset[int] = frozenset({400})


HEADER_CASES = [
    HeaderCase("seq_superscript_two", {"X-Frame-Seq": "²"}, {"seq": "²".encode()}),
    HeaderCase("seq_arabic_indic_digits", {"X-Frame-Seq": "١٢٣".encode()},
               {"seq": "١٢٣".encode()}),
    HeaderCase("seq_negative", {"X-Frame-Seq": "-1"}, {"seq": b"-1"}),
    HeaderCase("seq_huge", {"X-Frame-Seq": "9" * 40}, {"seq": b"9" * 40}),
    HeaderCase("seq_over_int64", {"X-Frame-Seq": str(2**63)}, {"seq": str(2**63).encode()}),
    HeaderCase("seq_missing", {"X-Frame-Seq": None}, {"seq": None}),
    HeaderCase("ts_text", {"X-Capture-Ts": "yesterday"}, {"ts": b"yesterday"}),
    HeaderCase("ts_float", {"X-Capture-Ts": "1.5e9"}, {"ts": b"1.5e9"}),
    HeaderCase("late_two", {"X-Frame-Late": "2"}, {"late": b"2"}),
    HeaderCase("content_type_text", {"Content-Type": "text/plain"}, {"w": b"wide"},
               frozenset({415})),
    HeaderCase("no_token", {"Authorization": None}, {"h": b"99999999"}, frozenset({401})),
    HeaderCase("binary_fields", {"X-Frame-Seq": "1\x00"}, {"seq": b"\xff\xfe", "ts": b"\x00"}),
]

#: entries that only a direct writer can make (ingest cannot produce them at all)
ENTRY_CASES: dict[str, dict[str, bytes | None]] = {
    "no_jpeg_field": {"jpeg": None},
    "empty_jpeg_field": {"jpeg": b""},
    "only_a_seq": {"jpeg": None, "ts": None, "w": None, "h": None, "rx": None, "late": None},
    "oversized_jpeg_field": {"jpeg": b"\xff\xd8" + bytes(2_000_000) + b"\xff\xd9"},
    "huge_jpeg_with_lying_fields": {"jpeg": tiny_huge_jpeg(), "w": b"16", "h": b"16"},
}
