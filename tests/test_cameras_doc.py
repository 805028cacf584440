"""docs/cameras.md works as written: every `cctv cameras ...` line of its ``sh`` blocks runs,
in order, against a real redis-server, and does what the text says."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from cctv.core.registry import Registry

from support import service_env

DOC = Path(__file__).resolve().parents[1] / "docs" / "cameras.md"


def doc_commands() -> list[list[str]]:
    """The `cctv cameras` command lines of the doc's sh blocks, in order."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S):
        for line in block.splitlines():
            if line.startswith("cctv cameras "):
                out.append(shlex.split(line)[1:])
    return out


def test_every_command_of_the_cameras_guide_runs(redis_server, rdb) -> None:
    commands = doc_commands()
    actions = [c[1] for c in commands]
    for needed in ("list", "add", "show", "set", "rotate-token", "remove"):
        assert needed in actions, f"docs/cameras.md has no `cctv cameras {needed}` step"
    seen_added = set()
    for args in commands:
        out = subprocess.run([sys.executable, "-m", "cctv", *args],
                             env=service_env(redis_server.url), capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, f"`cctv {' '.join(args)}` failed:\n{out.stderr}"
        if args[1] == "add":
            seen_added.add(args[2])
            assert Registry(rdb).get(args[2]) is not None
        if args[1] == "show":
            assert "camera-password" not in out.stdout  # the source's password is hidden
    # after the guide's last step every camera it added is removed again
    assert seen_added and not set(Registry(rdb).all()) & seen_added
