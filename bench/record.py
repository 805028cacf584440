"""Record benchmark figures: merge into bench/results.json and a named section of
docs/benchmarks.md, with the machine they ran on."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
DOC = ROOT / "docs" / "benchmarks.md"

_HEADER = """# Benchmarks

Every figure here was produced by a script in `bench/`; each section names its command and the
machine it ran on. Ratios are measured within one run. Machine-readable figures are merged
into `bench/results.json` (one key per figure, unit in the name).
"""


def machine() -> str:
    """A one-line description of this machine (CPU model, cores, memory, GPU if any)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = ""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            gpu = ", GPU " + out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    py = platform.python_version()
    return f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB{gpu}, Python {py}"


def record(figures: dict[str, float | int | str], section: str, markdown: str) -> None:
    """Merge ``figures`` into results.json and put ``markdown`` under ``## section`` in the doc.

    The section text is replaced whole on each run; other sections are kept.
    """
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data.update(figures)
    RESULTS.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n")

    doc = DOC.read_text() if DOC.exists() else _HEADER
    stamp = time.strftime("%Y-%m-%d")
    body = f"## {section}\n\n_Measured {stamp} on {machine()}._\n\n{markdown.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(doc):
        doc = pattern.sub(lambda _m: body + "\n", doc)
    else:
        doc = doc.rstrip() + "\n\n" + body
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(doc.rstrip() + "\n")
