"""The stream cap around a dead leader (real ingest, real redis-server): frames read but never
acked that the cap trims are counted as ``dropped_evicted`` with their seqs, like unread ones,
and the scripts read ids and seqs from the frame index, never the JPEG payloads."""

from __future__ import annotations

import requests

from cctv.core import keys
from cctv.core.scripts import SKIP_BACKLOG, Scripts

from support import clip_jpegs, post_frame

CAM = "cam1"


def _ingest(start_ingest):
    url, _svc = start_ingest(frames_maxlen=10, camera_fps_limit=1000)
    return url


def _post_many(url: str, jpeg: bytes, seqs: range) -> list[str]:
    s = requests.Session()
    ids = []
    for seq in seqs:
        resp = post_frame(s, url, CAM, "tok1-16charsfortests", jpeg, seq)
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    return ids


def _drops(rdb) -> list[tuple[str, list[str], list[str]]]:
    return [(f[b"reason"].decode(), f[b"ids"].decode().split(","), f[b"seqs"].decode().split(","))
            for _i, f in rdb.xrange(keys.drops(CAM))]


def test_pending_frames_trimmed_by_the_cap_are_counted(start_ingest, rdb) -> None:
    url = _ingest(start_ingest)
    jpeg = clip_jpegs(n=1)[0]
    ids = _post_many(url, jpeg, range(1, 11))
    # a leader reads six frames, then dies without acking them
    rdb.xreadgroup(keys.INFER_GROUP, "dead-leader", {keys.frames(CAM): ">"}, count=6)
    _post_many(url, jpeg, range(11, 19))  # the cap trims the 8 oldest: 6 pending, 2 unread
    evicted = [(ids_, seqs) for reason, ids_, seqs in _drops(rdb) if reason == "evicted"]
    assert sorted(i for ids_, _s in evicted for i in ids_) == sorted(ids[:8])
    assert sorted(int(s) for _i, seqs in evicted for s in seqs) == list(range(1, 9))
    assert int(rdb.hget(keys.stats(CAM), "dropped_evicted")) == 8
    # nothing of them stays pending for a take-over to trip over
    assert rdb.xpending(keys.frames(CAM), keys.INFER_GROUP)["pending"] == 0
    assert rdb.xlen(keys.frames(CAM)) == 10
    assert rdb.llen(keys.frame_index(CAM)) == 10
    acc = int(rdb.hget(keys.stats(CAM), "accepted"))
    assert acc == 18 == 8 + rdb.xlen(keys.frames(CAM))


def test_backlog_skip_reads_seqs_from_the_index(start_ingest, rdb) -> None:
    assert "XRANGE" not in SKIP_BACKLOG  # entries (with their JPEGs) are never copied in
    url = _ingest(start_ingest)
    jpeg = clip_jpegs(n=1)[0]
    ids = _post_many(url, jpeg, range(100, 102))
    rdb.xreadgroup(keys.INFER_GROUP, "w", {keys.frames(CAM): ">"}, count=2)
    ids += _post_many(url, jpeg, range(102, 108))
    rdb.set(keys.LEASE_INFERENCE, "w")
    rdb.set(keys.EPOCH_INFERENCE, 1)
    n = Scripts(rdb).skip_backlog(
        keys=[keys.LEASE_INFERENCE, keys.EPOCH_INFERENCE, keys.frames(CAM), keys.stats(CAM),
              keys.drops(CAM), keys.frame_index(CAM)], args=["w", 1, keys.INFER_GROUP])
    assert n == 5
    (reason, skipped, seqs), = _drops(rdb)
    assert reason == "behind" and skipped == ids[2:7] and seqs == [str(s) for s in range(102, 107)]
    # the newest is the next to be read
    (_stream, entries), = rdb.xreadgroup(keys.INFER_GROUP, "w", {keys.frames(CAM): ">"})
    assert [e[0].decode() for e in entries] == [ids[7]]


def test_entries_without_an_index_entry_are_counted_too(start_ingest, rdb) -> None:
    """Frames stored by an older ingest (or written around it) have no index entry; the cap
    still counts the unread and pending ones it trims, with their seqs."""
    url = _ingest(start_ingest)
    jpeg = clip_jpegs(n=1)[0]
    _post_many(url, jpeg, range(1, 2))  # creates the stream and its group
    rdb.delete(keys.frame_index(CAM))  # as if stored by an older ingest
    old = [rdb.xadd(keys.frames(CAM), {"jpeg": jpeg, "seq": seq}).decode()
           for seq in ("2", "x,y", "4", "5", "6", "7", "8", "9", "10")]
    rdb.xreadgroup(keys.INFER_GROUP, "dead-leader", {keys.frames(CAM): ">"}, count=3)
    _post_many(url, jpeg, range(11, 14))
    evicted = [(ids_, seqs) for reason, ids_, seqs in _drops(rdb) if reason == "evicted"]
    assert sum(len(i) for i, _s in evicted) == 3
    assert [s for _i, seqs in evicted for s in seqs] == ["1", "2", ""]  # "x,y" is no seq
    assert rdb.xpending(keys.frames(CAM), keys.INFER_GROUP)["pending"] == 0
    assert rdb.xlen(keys.frames(CAM)) == 10 and old[2] in {
        e[0].decode() for e in rdb.xrange(keys.frames(CAM))}
