"""The docs tell the truth about names a reader will type: every ``CCTV_*`` variable a document
names exists (a service setting, a sender option, a tooling variable), every service setting is
documented in docs/configuration.md, and every repository path a document names exists."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from cctv.core import settings as settings_mod
from cctv.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "pi" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
CONFIG_DOC = ROOT / "docs" / "configuration.md"

_VAR = re.compile(r"\bCCTV_[A-Z0-9_]*[A-Z0-9]\b")
_CODE = re.compile(r"`([^`\s]+)`")
# First path segments that name something in this repository (top level, inside the cctv
# package as docs abbreviate it, inside the sender package).
_TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")} | {".ci"}
_PACKAGES = {
    ROOT / "services" / "cctv": {p.name for p in (ROOT / "services" / "cctv").iterdir()},
    ROOT / "services": {"cctv"},
    ROOT / "pi": {p.name for p in (ROOT / "pi").iterdir()},
}
_NOT_IN_REPO = ("build/",)  # written by the tooling at run time


def _service_settings() -> set[str]:
    """Every service setting: the fields of the composite of all sections."""
    return {f"CCTV_{f.name.upper()}" for f in dataclasses.fields(Settings)}


def _sender_variables() -> set[str]:
    from cctv_sender import config as sender_config

    names = {f"{sender_config.PREFIX}{suffix}" for suffix, _help in
             sender_config._OPTIONS.values()}
    # whatever the sender reads from the environment, spelled out in its source
    for path in (ROOT / "pi" / "cctv_sender").rglob("*.py"):
        names |= set(_VAR.findall(path.read_text()))
    return names


def _tooling_variables() -> set[str]:
    names = set(settings_mod._NON_SETTINGS_VARS)
    for folder in ("stack", "bench", "tests", "docker", ".ci"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {"", ".py", ".sh", ".yml", ".env", ".txt"}:
                names |= set(_VAR.findall(path.read_text(errors="replace")))
    for path in (ROOT / "dev", ROOT / "docker-stack.yml", ROOT / "docker-stack.gpu.yml"):
        names |= set(_VAR.findall(path.read_text()))
    return names


def _documented_names() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for doc in DOCS:
        for name in _VAR.findall(doc.read_text()):
            found.setdefault(name, []).append(str(doc.relative_to(ROOT)))
    return found


def test_every_variable_the_docs_name_exists() -> None:
    settings = _service_settings()
    known = settings | {f"{s}_FILE" for s in settings} | _sender_variables() | _tooling_variables()
    # prefixes the docs write as a family ("CCTV_SENDER_<NAME>", "CCTV_STACK_*_IMAGE")
    families = tuple(p.rstrip("_") for p in settings_mod._NON_SETTINGS_PREFIXES)
    unknown = {name: docs for name, docs in _documented_names().items()
               if name not in known and name not in families}
    assert not unknown, f"the docs name variables that nothing reads: {unknown}"


def test_every_service_setting_is_documented() -> None:
    text = CONFIG_DOC.read_text()
    documented = set(_VAR.findall(text))
    # the table may write a group as "CCTV_A / CCTV_B" or with a shared stem
    missing = sorted(n for n in _service_settings() if n not in documented)
    assert not missing, f"docs/configuration.md does not document: {missing}"


def _repository_paths(doc: Path) -> list[str]:
    paths = []
    for token in _CODE.findall(doc.read_text()):
        token = token.rstrip(".,:;)")
        if (token.startswith(("/", "~", "$")) or "://" in token or ":" in token
                or any(c in token for c in "*{}<>=") or token.startswith(_NOT_IN_REPO)):
            continue
        first = token.split("/", 1)[0]
        if "/" not in token and first not in _TOP:
            continue
        if first in _TOP or any(first in names for names in _PACKAGES.values()):
            paths.append(token)
    return paths


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_repository_path_a_doc_names_exists(doc: Path) -> None:
    bases = [ROOT, doc.parent, *_PACKAGES]
    missing = [p for p in _repository_paths(doc) if not any((b / p).exists() for b in bases)]
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_the_path_check_can_fail(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("see `services/cctv/no_such_module.py` and `core/jpeg.py` and `/etc/x`\n")
    assert _repository_paths(doc) == ["services/cctv/no_such_module.py", "core/jpeg.py"]
