"""The access matrix as figures: runs tests/test_access_matrix.py (real ingest, web, an
inference replica and the events service; every route with foreign credentials) and records
how many cases it tried and how many were not refused as documented (goal 0).

    .venv/bin/python -m bench.access_matrix
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
    with tempfile.TemporaryDirectory(prefix="cctv-access-") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/test_access_matrix.py::test_every_route_refuses_foreign_credentials"],
            cwd=ROOT, env={**os.environ, "CCTV_BENCH_ACCESS_MATRIX": out},
            capture_output=True, text=True)
        tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        path = Path(out) / "access_matrix.json"
        if not path.exists():
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            raise SystemExit("the access matrix test wrote no figures")
        data = json.loads(path.read_text())
    figures = {k: data[k] for k in ("access_matrix_cases", "access_matrix_failures")}
    print(json.dumps(data, indent=1))
    print("pytest:", tail)
    rows = "\n".join(f"| {s} | {n} |" for s, n in data["by_service"].items())
    md = f"""`.venv/bin/python -m bench.access_matrix` runs `tests/test_access_matrix.py`: every
route of ingest, web, an inference replica and the events service (from the Flask url_maps and
the health servers' route list), with no credentials, wrong credentials, a camera token on the
viewer and the health ports, and a viewer login on ingest, plus the byte comparison of an
unknown camera's and a wrong token's reply (docs/security.md).

| figure | value | goal |
| --- | --- | --- |
| access_matrix_cases | {figures['access_matrix_cases']} | every route × credential |
| access_matrix_failures | {figures['access_matrix_failures']} | 0 |

| service | cases |
| --- | --- |
{rows}

pytest: `{tail}`"""
    record(figures, "Access matrix", md)


if __name__ == "__main__":
    main()
