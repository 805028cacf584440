"""The stream reader of the leader: which cameras there are, new frames through the consumer
group, pending frames claimed, every entry decoded into a :class:`Frame`.

Reading is not fenced (only writes are): the leader stops reading when its lease is in doubt.
An entry that does not decode as a frame is handed to ``drop_corrupt`` at once; a camera whose
read came back full (a backlog) is remembered for the leader to skip (:meth:`take_backlogged`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from cctv.core import keys
from cctv.core.entries import EntryError, decode_frame, seq_of
from cctv.core.logthrottle import LogThrottle
from cctv.core.settings import CAMERA_NAME_RE
from cctv.core.shardstate import camera_shards
from cctv.inference.records import BadEntry, Frame

log = logging.getLogger("cctv.inference.reader")

READ_COUNT = 8  # new entries read per camera per round; a full read means a backlog


class StreamReader:
    """Reads the frames stream of every active camera of shard ``shard`` of ``shards`` (as
    cctv:inference:camera_shards says; every camera when there is one shard) as consumer
    ``replica_id`` of the group."""

    def __init__(self, client: redis.Redis, replica_id: str, max_frame_bytes: int,
                 drop_corrupt: Callable[[BadEntry, str], None], shard: int = 0,
                 shards: int = 1) -> None:
        self.redis, self.replica_id, self.max_frame_bytes = client, replica_id, max_frame_bytes
        self.drop_corrupt, self.shard, self.shards = drop_corrupt, shard, shards
        self._cameras: list[str] = []
        self._cameras_at = 0.0
        self._backlogged: set[str] = set()
        self.bad_input = LogThrottle(log)

    # ---- cameras -------------------------------------------------------------------------
    def cameras(self) -> list[str]:
        """This shard's active cameras (refreshed every second), with their consumer groups
        ensured."""
        if time.monotonic() - self._cameras_at > 1.0:
            names = []
            owned = self._owned()
            for raw in self.redis.smembers(keys.CAMERAS_ACTIVE):
                name = raw.decode(errors="replace")
                if CAMERA_NAME_RE.fullmatch(name):
                    if owned is None or name in owned:
                        names.append(name)
                else:
                    self.bad_input.warning("_registry", "ignoring %r in %s: not a camera name",
                                           name[:80], keys.CAMERAS_ACTIVE)
            names.sort()
            for cam in set(names) - set(self._cameras):
                try:
                    self.redis.xgroup_create(keys.frames(cam), keys.INFER_GROUP, id="0",
                                             mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            self._cameras, self._cameras_at = names, time.monotonic()
        return self._cameras

    def _owned(self) -> set[str] | None:
        """The cameras assigned to this shard; None (all) when there is one shard. A camera
        not assigned yet belongs to no shard until a replica assigns it (within a second)."""
        if self.shards <= 1:
            return None
        assigned = camera_shards(self.redis.hgetall(keys.INFERENCE_CAMERA_SHARDS), self.shards)
        return {cam for cam, k in assigned.items() if k == self.shard}

    def refresh_cameras(self) -> None:
        """Read the cameras again at the next :meth:`cameras` (a new leadership)."""
        self._cameras_at = 0.0

    # ---- entries ---------------------------------------------------------------------------
    def frames_of(self, cam: str, entries: list, pick_us: int) -> list[Frame]:
        """The entries that decode as frames; the others are dropped as corrupt at once."""
        out = []
        for eid, fields in entries:
            if not fields:
                continue  # deleted while pending (XAUTOCLAIM reports those separately)
            try:
                out.append(Frame(cam, decode_frame(eid, fields, self.max_frame_bytes), pick_us))
            except EntryError as exc:
                entry_id = eid.decode(errors="replace") if isinstance(eid, bytes) else str(eid)
                self.drop_corrupt(BadEntry(cam, entry_id, seq_of(fields), "bad entry"),
                                  str(exc))
        return out

    # ---- reading ---------------------------------------------------------------------------
    def read(self) -> dict[str, list[Frame]]:
        """New frames per camera (blocks up to 100 ms when there are none)."""
        cams = self.cameras()
        if not cams:
            time.sleep(0.1)
            return {}
        try:
            resp = self.redis.xreadgroup(keys.INFER_GROUP, self.replica_id,
                                         {keys.frames(c): ">" for c in cams},
                                         count=READ_COUNT, block=100)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the stream or its group (restart without persistence, manual
            # cleanup): forget the cached cameras so their groups are re-created.
            log.warning("consumer group missing (%s); re-creating", exc)
            self._cameras, self._cameras_at = [], 0.0
            return {}
        pick = time.time_ns() // 1000
        out: dict[str, list[Frame]] = {}
        for stream, entries in resp or []:
            cam = keys.camera_from_frames_key(stream.decode())
            out[cam] = self.frames_of(cam, entries, pick)
            if len(entries) >= READ_COUNT:
                self._backlogged.add(cam)
        return out

    def take_backlogged(self) -> list[str]:
        """The cameras whose last read was full (a backlog to skip), forgotten here."""
        cams, self._backlogged = list(self._backlogged), set()
        return cams

    def claim(self, cam: str, min_idle_ms: int) -> list[Frame]:
        """Claim every frame of ``cam`` pending longer than ``min_idle_ms`` under any consumer,
        oldest first."""
        claimed: list[Frame] = []
        start = "0-0"
        while True:
            resp = self.redis.xautoclaim(keys.frames(cam), keys.INFER_GROUP, self.replica_id,
                                         min_idle_time=min_idle_ms, start_id=start, count=100)
            start = resp[0].decode() if isinstance(resp[0], bytes) else str(resp[0])
            claimed += self.frames_of(cam, resp[1], time.time_ns() // 1000)
            if len(resp) > 2 and resp[2]:
                # ingest counts frames the cap trims while pending; these were removed
                # around it (XDEL/XTRIM by hand), so there is no seq left to record
                log.warning("camera %s: %d pending frames were deleted from the stream",
                            cam, len(resp[2]))
            if start == "0-0":
                break
        return claimed
