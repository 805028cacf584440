"""The swarm snapshot: nodes, services and tasks as ``cctv swarmwatch`` publishes them.

``cctv swarmwatch`` (the only container with the manager's Docker socket) writes one JSON
value to ``cctv:swarm:snapshot`` every second with a TTL; web reads it for the dashboard. Like
every Redis value it is untrusted on the way back: :func:`decode_snapshot` checks every field
(types, lengths, counts) and raises :class:`~cctv.core.entries.EntryError` on anything else.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from cctv.core.entries import EntryError

VERSION = 1
#: the largest value read back (a swarm of hundreds of nodes and tasks fits with room)
MAX_BYTES = 1024 * 1024
MAX_ITEMS = 2000
MAX_STR = 512

_NODE_TEXT = ("name", "id", "role", "availability", "state", "address", "engine")
_TASK_TEXT = ("node", "state", "desired", "since", "error", "message")
_SERVICE_TEXT = ("name", "mode", "image")


@dataclass(frozen=True)
class SwarmSnapshot:
    """One decoded snapshot. ``ok`` false: the Docker API did not answer (``error`` says why in
    one word: ``no_socket``, ``not_manager``, ``docker_error``)."""

    time: float
    node: str
    ok: bool
    error: str
    nodes: list[dict]
    services: list[dict]


def encode_snapshot(*, time: float, node: str, ok: bool, error: str = "",
                    nodes: list[dict] | None = None, services: list[dict] | None = None) -> bytes:
    """The JSON value for ``cctv:swarm:snapshot``."""
    return json.dumps({"v": VERSION, "time": time, "node": node, "ok": ok, "error": error,
                       "nodes": nodes or [], "services": services or []},
                      separators=(",", ":")).encode()


def _text(d: dict, name: str, where: str, *, optional: bool = False) -> str | None:
    value = d.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > MAX_STR:
        raise EntryError(f"{where}.{name}: not a string of at most {MAX_STR} characters")
    return value


def _items(value: Any, where: str) -> list[dict]:
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise EntryError(f"{where}: not a list of at most {MAX_ITEMS} items")
    for item in value:
        if not isinstance(item, dict):
            raise EntryError(f"{where}: an item is not an object")
    return value


def _int(d: dict, name: str, where: str, *, optional: bool = False) -> int | None:
    value = d.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise EntryError(f"{where}.{name}: not a non-negative integer")
    return value


def _node(d: dict) -> dict:
    out: dict[str, Any] = {k: _text(d, k, "node") for k in _NODE_TEXT}
    out["reachability"] = _text(d, "reachability", "node", optional=True)
    leader = d.get("manager_leader")
    if not isinstance(leader, bool):
        raise EntryError("node.manager_leader: not a boolean")
    out["manager_leader"] = leader
    labels = d.get("labels", {})
    if not isinstance(labels, dict) or len(labels) > 100 or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= MAX_STR and len(v) <= MAX_STR
            for k, v in labels.items()):
        raise EntryError("node.labels: not an object of strings")
    out["labels"] = labels
    return out


def _task(d: dict) -> dict:
    out: dict[str, Any] = {k: _text(d, k, "task") for k in _TASK_TEXT}
    out["slot"] = _int(d, "slot", "task", optional=True)
    return out


def _service(d: dict) -> dict:
    out: dict[str, Any] = {k: _text(d, k, "service") for k in _SERVICE_TEXT}
    out["desired"] = _int(d, "desired", "service")
    out["running"] = _int(d, "running", "service")
    out["tasks"] = [_task(t) for t in _items(d.get("tasks"), "service.tasks")]
    return out


def decode_snapshot(raw: bytes | str | None) -> SwarmSnapshot:
    """Validate a value read from ``cctv:swarm:snapshot``; raises EntryError when it is not
    exactly what :func:`encode_snapshot` writes."""
    if raw is None:
        raise EntryError("no snapshot")
    if len(raw) > MAX_BYTES:
        raise EntryError(f"snapshot over {MAX_BYTES} bytes")
    try:
        d = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EntryError(f"snapshot is not JSON: {exc}") from None
    if not isinstance(d, dict) or d.get("v") != VERSION:
        raise EntryError(f"snapshot is not a version {VERSION} object")
    t = d.get("time")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        raise EntryError("snapshot.time: not a finite time")
    if not isinstance(d.get("ok"), bool):
        raise EntryError("snapshot.ok: not a boolean")
    node = _text(d, "node", "snapshot") or ""
    error = _text(d, "error", "snapshot") or ""
    return SwarmSnapshot(time=float(t), node=node, ok=d["ok"], error=error,
                         nodes=[_node(n) for n in _items(d.get("nodes"), "snapshot.nodes")],
                         services=[_service(s) for s in _items(d.get("services"),
                                                               "snapshot.services")])
