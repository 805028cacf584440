"""Plugin discovery: the modules of a plugin package, imported once each, and the plugin
objects they define (detector backends in ``inference/backends/``, event sinks in
``events/sinks/``; the Pi sender's camera sources do the same in their own package, which
depends on nothing of this one)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def discover(path: Iterable[str], package: str, kind: type[T], seen: set[str]) -> Iterator[T]:
    """Import every module of ``package`` (searched in ``path``, its ``__path__``) that is not
    in ``seen`` yet (then added to it), and yield each ``kind`` instance it defines. A folder
    added to ``path`` is seen on the next call."""
    for info in pkgutil.iter_modules(path, package + "."):
        if info.name in seen:
            continue
        seen.add(info.name)
        module = importlib.import_module(info.name)
        yield from (v for v in vars(module).values() if isinstance(v, kind))
