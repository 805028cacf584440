"""Hostile-input run: every case of ``tests/test_poison.py`` (frames through ingest and written
straight into the stream, with a warm standby) and ``tests/test_poison_results.py`` (bad result
entries into the events service), then their figures recorded.

    .venv/bin/python -m bench.poison        # about two minutes

Records ``poison_cases_tried``, ``poison_service_exits`` (goal 0: ingest, both inference
replicas and the events service are all still running at the end) and
``poison_frames_unaccounted`` (goal 0: stored frames in neither a result nor a drop record).
The tests write the figures (``CCTV_POISON_FIGURES``); this script runs them and records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.record import record  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cctv-poison-") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/test_poison.py", "tests/test_poison_results.py"],
            cwd=ROOT, env={**os.environ, "CCTV_POISON_FIGURES": out}, capture_output=True,
            text=True)
        tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        frames = json.loads((Path(out) / "frames.json").read_text())
        results = json.loads((Path(out) / "results.json").read_text())
    figures = {
        "poison_cases_tried": frames["poison_cases_tried"] + results["poison_results_cases"],
        "poison_service_exits": frames["poison_service_exits"] + results["poison_events_exits"],
        "poison_frames_unaccounted": frames["poison_frames_unaccounted"],
        "poison_results_uncounted": results["poison_results_uncounted"],
    }
    print(json.dumps(figures, indent=1))
    print("pytest:", tail)
    md = f"""`.venv/bin/python -m bench.poison` runs `tests/test_poison.py` and
`tests/test_poison_results.py` (real ingest, a leader and a warm standby, the events service,
redis-server) and records what they saw. {frames['poison_cases_tried']} frame cases (forged frame
headers, unsupported JPEG variants, broken scans, non-JPEG and oversized bodies, junk headers;
each through ingest and written straight into the stream) and
{results['poison_results_cases']} bad result entries fed to the events service.

| figure | value | goal |
| --- | --- | --- |
| poison_cases_tried | {figures['poison_cases_tried']} | ≥ 30 |
| poison_service_exits | {figures['poison_service_exits']} | 0 |
| poison_frames_unaccounted | {figures['poison_frames_unaccounted']} | 0 |
| poison_results_uncounted | {figures['poison_results_uncounted']} | 0 |

pytest: `{tail}`"""
    record(figures, "Hostile input (untrusted frames and entries)", md)
    if proc.returncode:
        print(proc.stdout[-5000:])
        sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
