"""Event sinks (webhooks, MQTT, ...), one module each, registered by their key in the rules file.

Every module of this package is imported on first use and each module-level :class:`Sink` it
defines is registered; a new sink is one new file here (see docs/extending.md).
:func:`register` is the same call the scan makes. config.py adds each sink's section to the
file's schema; service.py asks each sink for its receivers, one delivery worker each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cctv.core.plugins import discover

if TYPE_CHECKING:
    from cctv.events.delivery import Receiver
    from cctv.events.settings import EventsSettings


@dataclass(frozen=True)
class Route:
    """A receiver to run a delivery worker for, and the images its events carry."""

    receiver: Receiver
    images: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sink:
    """One kind of event receiver.

    ``key``: its top-level key in the rules file; ``schema``: the pydantic annotation of that
    section (validated with the rest of the file, same error messages) and ``default`` its
    value when absent; ``names(section)``: the receiver names it configures (unique across
    sinks); ``check(section, path)``: more checks (raise ``EventsConfigError``);
    ``receivers(section, settings, path)``: the :class:`Route` of each receiver. ``title``
    names it in messages; ``order`` sorts sinks.
    """

    key: str
    schema: Any
    default: Any
    names: Callable[[Any], list[str]]
    receivers: Callable[[Any, EventsSettings, str], list[Route]]
    check: Callable[[Any, str], None] | None = None
    title: str = ""
    order: int = 100


_registry: dict[str, Sink] = {}
_imported: set[str] = set()


def register(sink: Sink) -> Sink:
    """Register ``sink`` under its key (a later one with the same key replaces it)."""
    _registry[sink.key] = sink
    return sink


def sinks() -> list[Sink]:
    """Every registered sink, in ``order``. Imports the modules of this package not imported
    yet (a folder added to ``__path__`` is seen on the next call)."""
    for found in discover(__path__, __name__, Sink, _imported):
        register(found)
    return sorted(_registry.values(), key=lambda s: (s.order, s.key))


def sink(key: str) -> Sink:
    """The sink registered as ``key``; ``KeyError`` naming the known keys otherwise."""
    found = {s.key: s for s in sinks()}.get(key)
    if found is None:
        raise KeyError(f"unknown event sink {key!r}; known: {', '.join(s.key for s in sinks())}")
    return found
