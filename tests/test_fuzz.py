"""Property-based fuzzing (hypothesis) of the JPEG header parser, the safe decoder and every
stream entry decoder: whatever the input, each returns a valid value or raises its one error.
Bounded to well under a minute; ``bench/fuzz.py`` runs the same targets for 100,000+ cases."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_targets as t

FAST = settings(max_examples=500, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(FAST, max_examples=150)


@FAST
@given(t.jpeg_bytes())
def test_jpeg_header_parser(data: bytes) -> None:
    t.check_jpeg_info(data)


@SLOW
@given(t.mutated_jpegs())
def test_safe_decoder(data: bytes) -> None:
    t.check_decode_jpeg(data)


@FAST
@given(t.entry_ids, t.frame_entries)
def test_frame_entries(entry_id: bytes, fields: dict) -> None:
    t.check_frame_entry(entry_id, fields)


@FAST
@given(t.entry_ids, t.result_entries)
def test_result_entries(entry_id: bytes, fields: dict) -> None:
    t.check_result_entry(entry_id, fields)


@FAST
@given(t.entry_ids, t.drop_entries)
def test_drop_entries(entry_id: bytes, fields: dict) -> None:
    t.check_drop_entry(entry_id, fields)


@FAST
@given(t.entry_ids, t.event_entries)
def test_event_entries(entry_id: bytes, fields: dict) -> None:
    t.check_event_entry(entry_id, fields)


@FAST
@given(st.text(max_size=30))
def test_parse_uint(text: str) -> None:
    t.check_parse_uint(text)


def test_good_entries_decode() -> None:
    """The fuzzers' starting points are valid: the encoders and decoders agree."""
    from cctv.core.entries import decode_drop, decode_event, decode_frame, decode_result

    assert decode_frame(b"1-0", t.GOOD_FRAME, t.MAX_BYTES).seq == 5
    r = decode_result(b"1-0", t.GOOD_RESULT)
    assert r.late and r.dets[0].track == 9 and r.infer_ms == 1.5
    assert decode_drop(b"1-0", t.GOOD_DROP).seqs == (5, None)
    assert decode_event(b"1-0", t.GOOD_EVENT).record["snapshot"] == "cam1/ev1.jpg"
