"""Event storage: snapshot and crop files on a volume, the record and its indexes in Redis.

* Files: ``CCTV_EVENTS_DIR/<camera>/<YYYY-MM-DD>/<event id>.jpg`` (annotated snapshot),
  ``<event id>.crop.jpg`` and ``<event id>.mp4`` (the clip, written by ``clips.py`` once the
  event's post-margin has passed), each written atomically (temp file + rename).
* ``cctv:event:{id}``: hash with the record as JSON, its status, file paths (``snapshot``,
  ``crop``, ``clip``) and the list of index keys it is in (so that deleting it finds them all).
* Indexes: ``cctv:events:idx`` (every event) and ``cctv:events:idx:{facet}:{value}`` for
  camera, class, zone, line, rule and each caption word, all sorted sets scored by start time.
* ``cctv:events``: the stream receivers read (``event.start``, ``event.end``), capped at
  ``CCTV_EVENTS_MAXLEN``. One script writes record, indexes and stream entry together and is
  idempotent (a start for a stored event, or an end for a closed one, does nothing), so a
  restarted service that replays an entry emits nothing twice.
* Failures that cost part of an event but not the event (a snapshot that cannot be drawn, a
  file that cannot be written: a full or read-only disk) are recorded by :meth:`failure`:
  ``failed:<stage>`` in ``cctv:events:stats``, an entry in ``cctv:events:deadletter`` with the
  reason, ``cctv_events_failures_total{stage}``, and a log line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import redis
from prometheus_client import Counter

from cctv.core import keys
from cctv.core.redisconn import durable
from cctv.core.scripts import EMIT_EVENT, SET_CLIP
from cctv.events.captions import words

FAILURES = Counter("cctv_events_failures_total",
                   "Parts of events lost to an error (the event itself is kept), by stage: "
                   "snapshot (drawing/encoding), clip (frames gone, encoding), storage (writing "
                   "files)", ["stage"])
for _stage in ("snapshot", "clip", "storage"):
    FAILURES.labels(_stage)

log = logging.getLogger("cctv.events.storage")

EVENT_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
FACETS = ("camera", "class", "zone", "line", "rule", "word")


def _with_clip(raw: bytes | None, clip: bytes | None) -> dict | None:
    """A stored record with the path of its clip file ("" until the clip is written)."""
    if not raw:
        return None
    record = json.loads(raw)
    record["clip"] = clip.decode() if clip else ""
    return record


def index_keys(record: dict) -> list[str]:
    """Every index a record belongs to (besides the all-events index)."""
    out = {keys.events_index("camera", record["camera"]), keys.events_index("rule", record["rule"])}
    for name in record.get("classes", []):
        out.add(keys.events_index("class", name))
    if record.get("zone"):
        out.add(keys.events_index("zone", record["zone"]))
    if record.get("line"):
        out.add(keys.events_index("line", record["line"]))
    text = " ".join([record.get("caption", ""), record["rule"], record.get("zone", ""),
                     record.get("line", ""), *record.get("classes", [])])
    out.update(keys.events_index("word", w) for w in words(text))
    return sorted(out)


class EventStore:
    """Reads and writes events; shared by the events service and the web viewer."""

    def __init__(self, client: redis.Redis, media_dir: str | Path, maxlen: int = 10000, *,
                 replicas: int = 0, wait_timeout_ms: int = 200) -> None:
        self.redis = client
        self.media_dir = Path(media_dir)
        self.maxlen = maxlen
        # emit() returns only once the event reached this many replicas (0: no WAIT)
        self.replicas, self.wait_timeout_ms = replicas, wait_timeout_ms
        self._emit = client.register_script(EMIT_EVENT)
        self._set_clip = client.register_script(SET_CLIP)

    # ---- files ---------------------------------------------------------------------------
    def image_paths(self, record: dict, tz: ZoneInfo) -> tuple[str, str]:
        """Relative paths of an event's snapshot and crop."""
        day = datetime.fromtimestamp(record["start_ms"] / 1000, tz).strftime("%Y-%m-%d")
        base = f"{record['camera']}/{day}/{record['id']}"
        return f"{base}.jpg", f"{base}.crop.jpg"

    def clip_path(self, record: dict, tz: ZoneInfo) -> str:
        """Relative path of an event's MP4 clip (beside its snapshot)."""
        return self.image_paths(record, tz)[0].removesuffix(".jpg") + ".mp4"

    def set_clip(self, event_id: str, rel: str) -> bool:
        """Record the clip file of ``event_id``; False when the event is gone."""
        return bool(self._set_clip(keys=[keys.event(event_id)], args=[rel]))

    def clip(self, event_id: str) -> str:
        """The relative path of ``event_id``'s clip, or "" when it has none (yet)."""
        if not EVENT_ID_RE.match(event_id):
            return ""
        raw = self.redis.hget(keys.event(event_id), "clip")
        return raw.decode() if raw else ""

    def write_file(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` under the media folder atomically."""
        path = self.media_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_files(self, files: dict[str, bytes]) -> None:
        """Write every ``rel: data`` of ``files`` (atomically each); on an error the ones
        already written are removed again and the OSError is raised."""
        done: list[str] = []
        try:
            for rel, data in files.items():
                self.write_file(rel, data)
                done.append(rel)
        except OSError:
            for rel in done:
                with contextlib.suppress(OSError):
                    (self.media_dir / rel).unlink()
            raise

    def failure(self, stage: str, event_id: str, why: str) -> None:
        """Record that ``stage`` failed for ``event_id`` (see the module docstring)."""
        FAILURES.labels(stage).inc()
        log.error("event %s: %s failed: %s", event_id, stage, why,
                  extra={"event": event_id, "stage": stage})
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(keys.EVENTS_STATS, f"failed:{stage}", 1)
        pipe.xadd(keys.EVENTS_DEADLETTER, {"stage": stage, "receiver": "", "ids": "",
                                           "why": why[:500], "events": json.dumps([event_id])},
                  maxlen=10000, approximate=True)
        pipe.execute()

    def resolve(self, rel: str) -> Path | None:
        """The absolute path of a stored file, or None when ``rel`` leaves the media folder."""
        if not rel:
            return None
        root = self.media_dir.resolve()
        path = (root / rel).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None

    # ---- records -------------------------------------------------------------------------
    def emit(self, kind: str, record: dict) -> bool:
        """Store ``record`` and append it to the events stream; False for a replay.

        With replicas to wait for, raises :class:`cctv.core.redisconn.NotReplicated` when the
        event did not reach them in time (the events service then replays the result entry:
        the write is idempotent, the replay waits again)."""
        idx = index_keys(record)
        written, = durable(self.redis, self.replicas, self.wait_timeout_ms, lambda pipe: self._emit(
            keys=[keys.event(record["id"]), keys.EVENTS, keys.EVENTS_STATS,
                  keys.EVENTS_INDEX_KEYS, keys.EVENTS_INDEX, *idx],
            args=[kind, record["id"], int(record["start_ms"]), self.maxlen, record["camera"],
                  record["rule"], json.dumps(record, separators=(",", ":")),
                  record.get("snapshot", ""), record.get("crop", "")], client=pipe))
        return bool(written)

    def get(self, event_id: str) -> dict | None:
        """The stored record of ``event_id`` or None."""
        if not EVENT_ID_RE.match(event_id):
            return None
        raw, clip = self.redis.hmget(keys.event(event_id), "json", "clip")
        return _with_clip(raw, clip)

    def query(self, *, camera: str = "", cls: str = "", zone: str = "", rule: str = "",
              text: str = "", since_ms: float | None = None, until_ms: float | None = None,
              limit: int = 50) -> list[dict]:
        """Events matching every given filter, newest first (``text``: all its words)."""
        facet_keys = [keys.events_index(f, v) for f, v in
                      (("camera", camera), ("class", cls), ("zone", zone), ("rule", rule)) if v]
        facet_keys += [keys.events_index("word", w) for w in sorted(words(text))]
        hi = "+inf" if until_ms is None else int(until_ms)
        lo = "-inf" if since_ms is None else int(since_ms)
        if len(facet_keys) <= 1:
            key = facet_keys[0] if facet_keys else keys.EVENTS_INDEX
            ids = self.redis.zrevrangebyscore(key, hi, lo, start=0, num=limit)
        else:
            tmp = f"{keys.EVENTS_INDEX}:tmp:{uuid.uuid4().hex}"
            pipe = self.redis.pipeline(transaction=True)
            pipe.zinterstore(tmp, facet_keys, aggregate="MAX")
            pipe.zrevrangebyscore(tmp, hi, lo, start=0, num=limit)
            pipe.delete(tmp)
            ids = pipe.execute()[1]
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for i in ids:
            pipe.hmget(keys.event(i.decode()), "json", "clip")
        return [r for r in (_with_clip(raw, clip) for raw, clip in pipe.execute()) if r]

    def facet_values(self, facet: str) -> list[str]:
        """Values that have events for a facet (for the viewer's filters)."""
        prefix = keys.events_index(facet, "")
        return sorted(k.decode()[len(prefix):] for k in self.redis.smembers(keys.EVENTS_INDEX_KEYS)
                      if k.decode().startswith(prefix))

    def stats(self) -> dict[str, int]:
        """The events counters (emitted, unconfirmed, delivered..., per rule and receiver)."""
        return {k.decode(): int(v) for k, v in self.redis.hgetall(keys.EVENTS_STATS).items()}

    def count(self, field: str, n: int = 1) -> None:
        """Add ``n`` to one events counter."""
        self.redis.hincrby(keys.EVENTS_STATS, field, n)

    # ---- deletion (retention) ------------------------------------------------------------
    def delete(self, event_ids: list[str]) -> int:
        """Delete events: index entries, record, then files. Returns the bytes freed."""
        if not event_ids:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for eid in event_ids:
            pipe.hmget(keys.event(eid), "idx", "snapshot", "crop", "clip")
        rows = pipe.execute()
        pipe = self.redis.pipeline(transaction=True)
        files: list[str] = []
        for eid, (idx, snap, crop, clip) in zip(event_ids, rows, strict=True):
            for k in (idx or b"").decode().split("\n"):
                if k:
                    pipe.zrem(k, eid)
            pipe.zrem(keys.EVENTS_INDEX, eid)
            pipe.delete(keys.event(eid))
            pipe.zrem(keys.EVENTS_CLIPS, eid)
            files += [p.decode() for p in (snap, crop, clip) if p]
        pipe.execute()
        freed = 0
        for rel in files:
            path = self.media_dir / rel
            try:
                freed += path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                pass
        return freed

    def now_ms(self) -> float:
        return time.time() * 1000
