"""Camera shards: which shard a camera is in, and which replica should lead which shard.

The cameras are split into ``CCTV_INFERENCE_SHARDS`` shards. A camera is given its shard once,
by the first replica that sees it: the shard with the fewest active cameras, ties broken by
rendezvous hashing of the name (:func:`assign`), recorded with HSETNX in
``cctv:inference:camera_shards``. So the split is even (a pure hash of a dozen names is lumpy:
shards with none beside shards with four) and adding or removing a camera moves no other
camera. Each shard has its own lease and
fencing epoch (:func:`cctv.core.keys.shard_keys`); every replica leads the shards it holds and
is a warm standby for all the others. Every replica decides from the same view (the shards'
leases and holders, the replicas' heartbeats) with the same pure functions below, so they agree
on who takes a free shard without talking to each other:

* a free shard is taken at once by the *taker*: the least loaded eligible replica (ties broken
  by the rendezvous weight of shard and replica); any other replica takes it only after a grace
  period, in case the taker is gone too;
* a replica holding more than its fair share (``ceil(shards / eligible replicas)``) hands the
  excess over to the least loaded ones: it names the successor and releases (a planned hand-over,
  tens of milliseconds); one replica and one shard is the unsharded behaviour exactly;
* capacity: a replica *outclassed* by another (a GPU replica against a CPU one, see
  :mod:`cctv.inference.capacity`) is not eligible while the faster one is up: it hands its shards
  over and takes a free shard only after the grace period — a valid standby, never a first pick.

A replica whose lease lapsed without a release (``released`` 0 in the shard's holder hash), or
whose last heartbeat still claims a shard that another replica leads now, is *suspect*:
probably dead, it is neither a taker nor a successor until it beats (or leads) again.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from cctv.core import keys

#: the most shards the cameras may be split into
MAX_SHARDS = keys.MAX_SHARDS


def _weight(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b("/".join(map(str, parts)).encode(),
                                          digest_size=8).digest(), "big")


def home_shard(camera: str, shards: int) -> int:
    """The shard rendezvous hashing gives ``camera`` among ``shards`` (0 when there is one):
    the tie-break of :func:`assign`."""
    if shards <= 1:
        return 0
    return max(range(shards), key=lambda k: _weight("camera", camera, k))


def assign(cameras: list[str], current: dict[str, int], shards: int,
           leaders: dict[int, str | None] | None = None) -> dict[str, int]:
    """Shards for the ``cameras`` that ``current`` (camera -> shard) lacks: each to the shard
    with the fewest of ``cameras`` so far; among those, the one whose leader (``leaders``:
    shard -> replica) has the fewest cameras, so that a few cameras over many shards still
    reach every replica; then by rendezvous weight. The cameras already in ``current`` keep
    their shards."""
    leaders = leaders or {}
    count = [0] * shards
    for cam in cameras:
        if 0 <= current.get(cam, -1) < shards:
            count[current[cam]] += 1

    def busy(k: int) -> int:  # cameras of the replica leading shard k (0: unled)
        who = leaders.get(k)
        return sum(count[j] for j in range(shards) if who and leaders.get(j) == who)

    out: dict[str, int] = {}
    for cam in sorted(cameras):
        if 0 <= current.get(cam, -1) < shards:
            continue
        k = min(range(shards),
                key=lambda k, c=cam: (count[k], busy(k), -_weight("camera", c, k)))
        out[cam] = k
        count[k] += 1
    return out


def weight(shard: int, replica: str) -> int:
    """The rendezvous weight of ``replica`` for ``shard``: higher wins a tie."""
    return _weight("shard", shard, replica)


@dataclass
class ShardState:
    """One shard as read from Redis."""

    shard: int
    holder: str | None  # the lease's value: who leads it now
    prefer: str | None  # the successor a hand-over named
    last: str = ""  # who held it last (the holder hash)
    released: bool = True  # whether that one released it


@dataclass
class View:
    """What every replica decides from: the shards, the eligible replicas (ready, may lead,
    fresh heartbeat; this replica included when it is ready) and the outclassed ones."""

    shards: list[ShardState]
    eligible: list[str]
    outclassed: set[str] = field(default_factory=set)
    #: replicas whose last heartbeat claims a shard another one leads now (or nobody does)
    stale: set[str] = field(default_factory=set)

    def suspects(self) -> set[str]:
        """Replicas probably gone: a lease lapsed without a release (and they lead nothing
        now), or their heartbeat is behind the leases."""
        holders = {s.holder for s in self.shards if s.holder}
        return ({s.last for s in self.shards
                 if s.holder is None and s.last and not s.released} - holders) | self.stale

    def loads(self) -> dict[str, int]:
        """Shards led per eligible (not suspect) replica."""
        loads = {r: 0 for r in self.eligible if r not in self.suspects()}
        for s in self.shards:
            if s.holder in loads:
                loads[s.holder] += 1
        return loads


def takers(view: View) -> dict[int, str]:
    """For each free shard, the replica that takes it at once: the named successor when it is
    eligible, else the least loaded eligible replica (simulating the shards handed out in this
    round), ties by rendezvous weight. Free shards without an eligible replica are left out."""
    loads = view.loads()
    fast = {r: n for r, n in loads.items() if r not in view.outclassed} or loads
    out: dict[int, str] = {}
    for s in sorted(view.shards, key=lambda s: s.shard):
        if s.holder is not None:
            continue
        if s.prefer and s.prefer in loads:
            out[s.shard] = s.prefer
        elif fast:
            out[s.shard] = min(fast, key=lambda r, k=s.shard: (fast[r], -weight(k, r)))
        else:
            continue
        if out[s.shard] in fast:
            fast[out[s.shard]] += 1
    return out


def handovers(view: View, me: str) -> dict[int, str]:
    """The shards ``me`` should hand over now, each with its successor: all of them when ``me``
    is outclassed and a faster replica is eligible; otherwise the shards above its fair share,
    to replicas below it. The shards given away are those least ``me``'s by weight."""
    loads = view.loads()
    mine = sorted((s.shard for s in view.shards if s.holder == me),
                  key=lambda k: weight(k, me))
    fast = {r: n for r, n in loads.items() if r not in view.outclassed and r != me}
    if not mine or not fast:
        return {}
    if me in view.outclassed:
        give, fair = len(mine), math.inf
    else:
        fair = math.ceil(len(view.shards) / (len(fast) + 1))
        give = len(mine) - fair
    out: dict[int, str] = {}
    for k in mine[:max(0, give)]:
        target = min(fast, key=lambda r, k=k: (fast[r], -weight(k, r)))
        if fast[target] >= fair:
            break
        out[k] = target
        fast[target] += 1
    return out
