"""The fenced publisher: every write of the leader (results, drops, backlog skips, tracker
state) goes through a fenced script (core/scripts.py), and this is the one place that turns
the fence's refusal (STALE) into :class:`NotLeader`."""

from __future__ import annotations

import logging
from typing import NoReturn

import redis
from redis.commands.core import Script

from cctv.core import keys
from cctv.core.entries import encode_result
from cctv.core.logthrottle import LogThrottle
from cctv.core.scripts import Scripts, is_stale_error
from cctv.inference.metrics import DROPPED, PROCESSED
from cctv.inference.records import BadEntry, Frame, Result, TrackState

log = logging.getLogger("cctv.inference.publisher")


class NotLeader(Exception):
    """Raised when a fenced write is refused: this replica must step down."""


def raise_refused(reply: BaseException) -> NoReturn:
    """Raise :class:`NotLeader` for the fence's refusal, ``reply`` itself for any other
    error."""
    if is_stale_error(reply):
        raise NotLeader(str(reply)) from None
    raise reply


class Publisher:
    """Fenced writes of one leadership of one shard: the replica's id and the ``epoch`` it
    leads the shard in."""

    def __init__(self, client: redis.Redis, scripts: Scripts, replica_id: str, model: str,
                 det_maxlen: int, shard: keys.ShardKeys | None = None) -> None:
        self.redis, self.scripts, self.replica_id = client, scripts, replica_id
        self.keys = shard or keys.shard_keys(0)
        self.model, self.det_maxlen = model, det_maxlen
        self.epoch = 0
        self.bad_input = LogThrottle(log)

    def _fence(self) -> list[str | int]:
        return [self.replica_id, self.epoch]

    def _call(self, script: Script, keys: list[str], args: list) -> int:
        try:
            return int(script(keys=keys, args=[*self._fence(), *args]))
        except redis.ResponseError as exc:
            raise_refused(exc)

    def drop(self, frames: list[Frame] | list[BadEntry], reason: str) -> int:
        """Ack ``frames`` (one camera's) as dropped for ``reason``, counted and recorded with
        their seqs; returns how many were still pending."""
        if not frames:
            return 0
        cam = frames[0].camera
        n = self._call(self.scripts.drop_frames,
                       [self.keys.lease, self.keys.epoch, keys.frames(cam),
                        keys.stats(cam), keys.drops(cam)],
                       [reason, keys.INFER_GROUP, len(frames), *[f.id for f in frames],
                        *[f.seq for f in frames]])
        DROPPED.labels(cam, reason).inc(n)
        return n

    def drop_corrupt(self, frame: Frame | BadEntry, why: str) -> None:
        """Ack one frame that cannot be decoded, letterboxed, detected or tracked as
        ``corrupt`` (counted, recorded with its seq) and warn, at most once per camera per
        minute."""
        self.bad_input.warning(frame.camera, "camera %s: frame %s (seq %s) dropped as corrupt: "
                               "%s", frame.camera, frame.id, frame.seq or "?", why,
                               frame=frame.id, seq=frame.seq)
        self.drop([frame], "corrupt")

    def skip_backlog(self, cam: str) -> int:
        """Skip every undelivered frame of ``cam`` but the newest (counted as behind, their
        seqs from the frame index)."""
        n = self._call(self.scripts.skip_backlog,
                       [self.keys.lease, self.keys.epoch, keys.frames(cam),
                        keys.stats(cam), keys.drops(cam), keys.frame_index(cam)],
                       [keys.INFER_GROUP])
        if n:
            DROPPED.labels(cam, "behind").inc(n)
            log.info("camera %s: skipped a backlog of %d frames", cam, n,
                     extra={"camera": cam, "dropped": n})
        return n

    def publish(self, results: list[Result], states: list[TrackState]) -> None:
        """Write ``results`` and ack their frames, and save the tracker ``states``, all fenced,
        in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for r in results:
            cam, e = r.frame.camera, r.frame.entry
            fields = encode_result(frame=e.id, seq=e.seq, ts=e.ts, rx=e.rx, pick=r.frame.pick_us,
                                   done=r.done_us, w=r.width, h=r.height, late=e.late,
                                   dets=[d.to_json() for d in r.detections], epoch=self.epoch,
                                   worker=self.replica_id, model=self.model,
                                   infer_ms=r.infer_ms)
            self.scripts.publish_result(
                keys=[self.keys.lease, self.keys.epoch, keys.frames(cam),
                      keys.detections(cam), keys.stats(cam), self.keys.last_result,
                      keys.FAILOVERS],
                args=[*self._fence(), e.id, self.det_maxlen, keys.INFER_GROUP, self.keys.shard,
                      *fields],
                client=pipe)
        for st in states:
            self.scripts.save_track_state(
                keys=[self.keys.lease, self.keys.epoch, keys.track_state(st.camera)],
                args=[*self._fence(), st.ttl_ms, st.blob], client=pipe)
        replies = pipe.execute(raise_on_error=False)
        for reply in replies[len(results):]:  # the tracker states
            if isinstance(reply, Exception):
                raise_refused(reply)
        for r, reply in zip(results, replies[:len(results)], strict=True):
            if isinstance(reply, Exception):
                raise_refused(reply)
            if reply:
                PROCESSED.labels(r.frame.camera).inc()
