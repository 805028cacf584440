"""The package structure stays as docs/architecture.md draws it: imports go one way
(core <- inference, ingest, events, swarmwatch, capture <- web; the commands on top use any),
and the package map there lists every module of services/cctv."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "services" / "cctv"
#: what each layer may import besides itself
ALLOWED = {
    "core": set(),
    "inference": {"core"},
    "ingest": {"core"},
    "events": {"core"},
    "swarmwatch": {"core"},
    "capture": {"core"},
    "web": {"core", "events"},
}


def _imports(path: Path) -> set[str]:
    """The ``cctv.<part>`` each import of ``path`` names (``cctv.core.x`` -> ``core``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else [
            a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            if name.startswith("cctv."):
                out.add(name.split(".")[1])
        # importlib.import_module("cctv.x...") is an import too
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" \
                and node.args and isinstance(node.args[0], ast.Constant) \
                and str(node.args[0].value).startswith("cctv."):
            out.add(str(node.args[0].value).split(".")[1])
    return out


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_go_one_way(layer: str) -> None:
    bad = {}
    for path in sorted((PKG / layer).rglob("*.py")):
        wrong = _imports(path) - ALLOWED[layer] - {layer}
        if wrong:
            bad[str(path.relative_to(PKG))] = sorted(wrong)
    assert not bad, f"{layer} may import only {sorted(ALLOWED[layer]) or 'itself'}: {bad}"


def test_every_package_is_a_known_layer() -> None:
    packages = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(ALLOWED), f"new package(s) {packages - set(ALLOWED)}: add a rule"


def test_the_package_map_lists_every_module() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = doc.split("## Package map", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([\w/]+\.py)` \|", table, re.M))
    modules = {str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}
    assert listed == modules, (f"not in the map: {sorted(modules - listed)}; "
                               f"in the map but gone: {sorted(listed - modules)}")


def test_the_import_check_can_fail(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from cctv.web.api import x\nimport cctv.events.config\n"
                      "importlib.import_module('cctv.ingest.app')\n")
    assert _imports(module) == {"web", "events", "ingest"}
