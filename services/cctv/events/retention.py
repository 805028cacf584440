"""Retention: events older than ``CCTV_EVENTS_RETENTION_DAYS`` go, then the oldest until at most
``CCTV_EVENTS_MAX_COUNT`` events and ``CCTV_EVENTS_MAX_BYTES`` of files remain; files no
event refers to (a crash between writing a file and storing its event) go after an hour.
The events service runs :func:`enforce` every ``CCTV_EVENTS_RETENTION_INTERVAL_S``."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter

from cctv.core import keys
from cctv.events.storage import EventStore

log = logging.getLogger("cctv.events.retention")

DELETED = Counter("cctv_events_retention_deleted_total", "Events deleted by retention", ["reason"])
ORPHAN_AGE_S = 3600
BATCH = 200


@dataclass
class RetentionResult:
    """What one pass deleted."""

    by_age: int = 0
    by_count: int = 0
    by_size: int = 0
    orphans: int = 0
    bytes_freed: int = 0
    bytes_left: int = 0


def media_usage(root: Path) -> tuple[int, list[Path]]:
    """Total bytes of the event files under ``root`` and the files themselves."""
    total, files = 0, []
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                continue
            files.append(p)
    return total, files


def _event_id_of(path: Path) -> str:
    name = path.name
    for suffix in (".crop.jpg", ".jpg", ".mp4"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return ""


def _remove_empty_dirs(root: Path) -> None:
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        if Path(dirpath) != root:
            with contextlib.suppress(OSError):  # not empty: kept
                os.rmdir(dirpath)


def enforce(store: EventStore, *, max_age_s: float, max_count: int, max_bytes: int,
            now_ms: float | None = None) -> RetentionResult:
    """One retention pass; returns what it deleted."""
    r = store.redis
    now_ms = time.time() * 1000 if now_ms is None else now_ms
    res = RetentionResult()
    cutoff = now_ms - max_age_s * 1000
    while True:
        old = [i.decode() for i in r.zrangebyscore(keys.EVENTS_INDEX, "-inf", f"({cutoff}",
                                                   start=0, num=BATCH)]
        if not old:
            break
        res.bytes_freed += store.delete(old)
        res.by_age += len(old)
    excess = r.zcard(keys.EVENTS_INDEX) - max_count
    while excess > 0:
        ids = [i.decode() for i in r.zrange(keys.EVENTS_INDEX, 0, min(excess, BATCH) - 1)]
        res.bytes_freed += store.delete(ids)
        res.by_count += len(ids)
        excess -= len(ids)
    root = store.media_dir
    total, files = media_usage(root) if root.exists() else (0, [])
    # orphans: files of events that are not stored (and not being written right now)
    for p in files:
        eid = _event_id_of(p)
        try:
            age = time.time() - p.stat().st_mtime
        except FileNotFoundError:
            continue
        if age > ORPHAN_AGE_S and (not eid or not r.exists(keys.event(eid))):
            total -= p.stat().st_size
            p.unlink(missing_ok=True)
            res.orphans += 1
    while total > max_bytes:
        ids = [i.decode() for i in r.zrange(keys.EVENTS_INDEX, 0, 9)]
        if not ids:
            break
        freed = store.delete(ids)
        total -= freed
        res.bytes_freed += freed
        res.by_size += len(ids)
    res.bytes_left = max(0, total)
    # index keys whose sorted set emptied have vanished from Redis: forget them too
    for k in r.smembers(keys.EVENTS_INDEX_KEYS):
        if not r.exists(k):
            r.srem(keys.EVENTS_INDEX_KEYS, k)
    if root.exists():
        _remove_empty_dirs(root)
    for reason, n in (("age", res.by_age), ("count", res.by_count), ("size", res.by_size)):
        if n:
            DELETED.labels(reason).inc(n)
    deleted = res.by_age + res.by_count + res.by_size
    if deleted or res.orphans:
        store.count("retention_deleted", deleted)
        log.info("retention: deleted %d events (%d by age, %d by count, %d by size) and %d "
                 "orphan files, freed %d bytes; %d bytes left", deleted, res.by_age,
                 res.by_count, res.by_size, res.orphans, res.bytes_freed, res.bytes_left,
                 extra={"deleted": deleted, "bytes_left": res.bytes_left})
    return res
