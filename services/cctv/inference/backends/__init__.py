"""Detector backends, one module each, registered by the key ``CCTV_INFERENCE_BACKEND`` names.

Every module of this package is imported on first use and each module-level
:class:`Backend` it defines is registered; a new backend is one new file here (see
docs/extending.md). :func:`register` is the same call the scan makes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cctv.core.plugins import discover


@dataclass(frozen=True)
class Backend:
    """One way to run a detection model.

    ``load(model, device=, imgsz=, conf=, iou=, classes=)`` returns a ``Detector``;
    ``accepts(path, on_gpu)`` says whether ``backend=auto`` may pick it for that model (the
    candidate with the highest ``priority`` wins); ``missing(model)`` returns why it cannot run
    here (its library is not installed) or None.
    """

    key: str
    load: Callable[..., Any]
    accepts: Callable[[Path, bool], bool] | None = None
    priority: int = 0
    missing: Callable[[str], str | None] | None = None


_registry: dict[str, Backend] = {}
_imported: set[str] = set()


def register(backend: Backend) -> Backend:
    """Register ``backend`` under its key (a later one with the same key replaces it)."""
    _registry[backend.key] = backend
    return backend


def _scan() -> None:
    """Import every module of the package not imported yet (a folder added to ``__path__``
    is seen on the next call) and register the backends it defines."""
    for found in discover(__path__, __name__, Backend, _imported):
        register(found)


def backends() -> dict[str, Backend]:
    """Every registered backend by key."""
    _scan()
    return dict(_registry)


def backend(key: str) -> Backend:
    """The backend registered as ``key``; ``KeyError`` naming the known keys otherwise."""
    found = backends().get(key)
    if found is None:
        known = ", ".join(["auto", *sorted(_registry)])
        raise KeyError(f"unknown inference backend {key!r}; known: {known}")
    return found
