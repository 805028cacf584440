"""The sender and ingest agree on the wire: the Pi sender's copy of the upload's path, headers,
body type and camera-name pattern (``pi/cctv_sender/wire.py``) equals the services' own
(``services/cctv/core/wire.py``), and both sides spell them only through those modules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cctv.core import wire as services_wire
from cctv_sender import wire as sender_wire

ROOT = Path(__file__).resolve().parents[1]


def _constants(module: object) -> dict[str, object]:
    return {name: getattr(module, name) for name in dir(module) if name.isupper()}


def test_sender_and_services_agree() -> None:
    ours, theirs = _constants(services_wire), _constants(sender_wire)
    assert ours.keys() == theirs.keys()
    for name, value in ours.items():
        other = theirs[name]
        if isinstance(value, re.Pattern):
            value, other = (value.pattern, value.flags), (other.pattern, other.flags)
        assert value == other, f"{name}: services {value!r} != sender {other!r}"


@pytest.mark.parametrize("name", ["cam1", "front-door.2", "a" * 64])
def test_good_camera_names(name: str) -> None:
    assert services_wire.CAMERA_NAME_RE.fullmatch(name)


@pytest.mark.parametrize("name", ["", "-x", "a" * 65, "cam 1", "cam1\n", "ca/m", "cäm"])
def test_bad_camera_names(name: str) -> None:
    assert not services_wire.CAMERA_NAME_RE.fullmatch(name)


@pytest.mark.parametrize("path", ["services/cctv/ingest/app.py", "pi/cctv_sender/client.py"])
def test_headers_are_spelled_only_in_the_wire_modules(path: str) -> None:
    code = "\n".join(line for line in (ROOT / path).read_text().splitlines()
                     if not line.lstrip().startswith(("#", "*", "``")))
    for value in _constants(services_wire).values():
        if isinstance(value, str) and value.startswith("X-"):
            assert f'"{value}"' not in code, f"{path} spells {value} instead of using wire"
