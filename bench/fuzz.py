"""Long fuzzing run of the JPEG header parser, the safe decoder and every stream entry decoder.

    .venv/bin/python -m bench.fuzz                 # 120,000 cases (a few minutes)
    .venv/bin/python -m bench.fuzz --cases 20000   # a quick look

The same targets as ``tests/test_fuzz.py`` (``tests/fuzz_targets.py``), driven here by a plain
seeded random mutator instead of hypothesis (many more cases per second): real JPEGs with bytes
set, inserted, deleted or cut; frame headers rewritten; entries with fields replaced, removed or
junk. A crash is any exception other than the target's documented error, or a returned value
outside its bounds. Records ``fuzz_cases`` and ``fuzz_crashes`` (goal 0).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT / "tests")]

from bench.record import record  # noqa: E402

import fuzz_targets as t  # noqa: E402

JUNK = [b"", b"0", b"1", b"\xc2\xb2", "١٢٣".encode(), b"nan", b"inf", b"-1", b"1e3", b" 1",
        b"1_000", b"9" * 30, b"1-0", b"-", b"0-0", b"\xff\xfe", b"[]", b"{}", b"null",
        str(2**63).encode(), str(2**63 - 1).encode(), b"\x00"]


def mutate_jpeg(rng: random.Random) -> bytes:
    b = bytearray(rng.choice(t.SEEDS))
    for _ in range(rng.randint(1, 6)):
        if len(b) < 4:
            break
        op = rng.random()
        i = rng.randrange(len(b))
        if op < 0.35:
            if rng.random() < 0.6:  # mostly in the markers and the frame header
                i = rng.randrange(min(len(b), 200))
            b[i] = rng.randrange(256)
        elif op < 0.55:
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op < 0.75:
            del b[i:i + rng.randint(1, 8)]
        elif op < 0.85:
            b = b[:i] + b"\xff\xd9"
        else:  # a 16-bit field of the first 200 bytes set to an extreme
            j = min(i, 198, len(b) - 2)
            b[j:j + 2] = rng.choice([0, 1, 0xFFFF, 0xFFDA, 0xFFC0, 65500]).to_bytes(2, "big")
    return bytes(b)


def jpeg_input(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.1:
        return rng.randbytes(rng.randint(0, 300))
    if r < 0.2:
        return b"\xff\xd8" + rng.randbytes(rng.randint(0, 300)) + b"\xff\xd9"
    return mutate_jpeg(rng)


def junk(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.5:
        return rng.choice(JUNK)
    if r < 0.75:
        return str(rng.randint(-2**70, 2**70)).encode()
    return rng.randbytes(rng.randint(0, 24))


def entry(rng: random.Random, good: dict[bytes, bytes]) -> dict[str, bytes]:
    out = {}
    for k, v in good.items():
        r = rng.random()
        if r < 0.1:
            continue
        out[k.decode()] = junk(rng) if r < 0.3 else v
    if rng.random() < 0.1:
        out["extra"] = junk(rng)
    return out


def dets_json(rng: random.Random) -> bytes:
    pool = [None, True, 0, 1, -1, 2**64, 0.5, 5.0, float("nan"), float("inf"), "car", "", [],
            {}, [1, 2, 3, 4], [1, 2, 3], ["1", "2", "3", "4"], [float("nan")] * 4]
    dets = []
    for _ in range(rng.randint(0, 3)):
        d = {k: rng.choice(pool) for k in ("cls", "name", "conf", "xyxy", "track")
             if rng.random() < 0.85}
        dets.append(d)
    raw = json.dumps(dets if rng.random() < 0.9 else rng.choice(pool))
    if rng.random() < 0.05:
        raw = raw[:rng.randint(0, len(raw))]
    return raw.encode()


def run(cases: int, seed: int) -> tuple[dict[str, int], list[str]]:
    rng = random.Random(seed)
    plan = [("jpeg_info", 0.5), ("decode_jpeg", 0.08), ("frame_entry", 0.14),
            ("result_entry", 0.14), ("drop_entry", 0.07), ("event_entry", 0.05),
            ("parse_uint", 0.07)]
    counts = {name: 0 for name, _share in plan}
    crashes: list[str] = []
    for name, share in plan:
        for _ in range(int(cases * share) + 1):
            # inputs are made outside the try: a bug of the mutator is not a finding
            eid = rng.choice([b"1700000000000-0", junk(rng)])
            if name == "jpeg_info":
                data, target = jpeg_input(rng), t.check_jpeg_info
            elif name == "decode_jpeg":
                data, target = mutate_jpeg(rng), t.check_decode_jpeg
            elif name == "frame_entry":
                data, target = entry(rng, t.GOOD_FRAME), t.check_frame_entry
            elif name == "result_entry":
                data, target = entry(rng, t.GOOD_RESULT), t.check_result_entry
                if rng.random() < 0.7:
                    data["dets"] = dets_json(rng)
            elif name == "drop_entry":
                data, target = entry(rng, t.GOOD_DROP), t.check_drop_entry
            elif name == "event_entry":
                data, target = entry(rng, t.GOOD_EVENT), t.check_event_entry
            else:
                data, target = junk(rng).decode("utf-8", "replace"), t.check_parse_uint
            try:
                if name.endswith("_entry"):
                    target(eid, data)
                else:
                    target(data)
            except Exception:  # noqa: BLE001 - every unexpected exception is a finding
                crashes.append(f"{name}: {data!r:.200}\n{traceback.format_exc(limit=4)}")
            counts[name] += 1
    return counts, crashes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=120_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    started = time.perf_counter()
    counts, crashes = run(args.cases, args.seed)
    elapsed = time.perf_counter() - started
    total = sum(counts.values())
    for c in crashes[:5]:
        print(c)
    print(f"{total} cases in {elapsed:.0f} s, {len(crashes)} crashes: {counts}")
    if args.no_record:
        return
    rows = "\n".join(f"| {name} | {n} |" for name, n in counts.items())
    md = f"""`.venv/bin/python -m bench.fuzz --cases {args.cases} --seed {args.seed}`: seeded random
mutation of real JPEGs (baseline, progressive, grey) and of valid stream entries, fed to the
JPEG header parser, the safe decoder and each entry decoder (targets in `tests/fuzz_targets.py`;
`tests/test_fuzz.py` runs them under hypothesis in the default suite).

| target | cases |
| --- | --- |
{rows}

**fuzz_cases = {total}, fuzz_crashes = {len(crashes)}** (goal 0) in {elapsed:.0f} s."""
    record({"fuzz_cases": total, "fuzz_crashes": len(crashes)}, "Fuzzing (untrusted input)", md)


if __name__ == "__main__":
    main()
