"""Which cameras one capture instance claims, keeps or hands back: pure decisions on what the
registry, the leases and the other instances' heartbeats say (no Redis here).

* a camera may be pulled by an instance when it has a source and its node constraint is empty
  or names the instance's node;
* an instance claims free cameras while it holds fewer than its fair share:
  ``ceil(cameras it may pull / live capture instances)`` (and at most ``max_cameras``);
* a camera free for longer than ``orphan_s`` is claimed whatever the share says, so a camera
  is never left unpulled because a dead instance still counts as live;
* it never takes a held lease; an instance above its share for a while hands one camera back
  (:func:`surplus`), which is how cameras spread again after a take-over or a new instance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from cctv.core.registry import Camera


def may_pull(camera: Camera, node: str) -> bool:
    """True when an instance on ``node`` may pull ``camera``."""
    return bool(camera.source) and (not camera.node or camera.node == node)


def fair_share(pullable: int, live_instances: int, max_cameras: int = 0) -> int:
    """How many cameras one instance holds at most: ``ceil(pullable / live_instances)``,
    capped by ``max_cameras`` (0 = no cap)."""
    share = math.ceil(pullable / max(1, live_instances))
    return min(share, max_cameras) if max_cameras > 0 else share


@dataclass(frozen=True)
class Plan:
    """What one scan decided: cameras to claim (in this order, until the share is reached)
    and cameras to stop pulling (no longer pullable here)."""

    claim: tuple[str, ...]
    drop: tuple[str, ...]
    share: int


def plan(cameras: Mapping[str, Camera], node: str, held: Iterable[str],
         holders: Mapping[str, str | None], live_instances: int, *, max_cameras: int = 0,
         free_since: Mapping[str, float] | None = None, now: float = 0.0,
         orphan_s: float = float("inf"),
         rank: Callable[[str], object] | None = None) -> Plan:
    """The claims and drops of one scan.

    ``cameras``: the registry; ``held``: the cameras this instance pulls; ``holders``: camera
    -> lease holder (None: free) for the pullable cameras; ``free_since``: when each free
    camera was first seen free (same clock as ``now``); ``rank``: the order free cameras are
    tried in (default: by name)."""
    held = set(held)
    pullable = sorted(name for name, cam in cameras.items() if may_pull(cam, node))
    drop = tuple(sorted(held - set(pullable)))
    share = fair_share(len(pullable), live_instances, max_cameras)
    keep = len(held) - len(drop)
    free = [c for c in pullable if c not in held and holders.get(c) is None]
    if rank is not None:
        free.sort(key=rank)
    claim: list[str] = []
    since = free_since or {}
    for name in free:
        orphan = now - since.get(name, now) >= orphan_s
        if keep + len(claim) < share or (
                orphan and (max_cameras <= 0 or keep + len(claim) < max_cameras)):
            claim.append(name)
    return Plan(tuple(claim), drop, share)


def surplus(held: int, share: int) -> int:
    """How many cameras an instance holds above its share (to hand back, one at a time)."""
    return max(0, held - share)
