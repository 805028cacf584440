"""Hostile frames against the real pipeline: ingest, a leader and a warm standby (real
processes, real redis-server, the real model). Every case is sent through ingest and also
written straight into ``cctv:frames:<cam>`` (as a bug, an old version or anyone with Redis
access could). After each case: both replicas alive, the leader unchanged, a good frame still
processed, and every stored frame is in exactly one result or one drop record (by entry id and
by seq), with accepted + written = processed + every counted drop.

One set of processes serves every case. With ``CCTV_POISON_FIGURES=<folder>`` the module writes
its figures to ``frames.json`` there at the end (``bench/poison.py`` records them).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import redis
import requests

from cctv.core import keys
from cctv.core.entries import decode_drop, decode_result

from hostile_inputs import ENTRY_CASES, HEADER_CASES, BodyCase, HeaderCase, body_cases
from support import (
    MODEL_OPENVINO,
    Service,
    clip_jpegs,
    free_port,
    service_env,
    wait_for,
    wait_port,
)

CAM, TOKEN = "cam1", "tok1-16charsfortests"
MAX_FRAME_BYTES = 1_000_000
DROP_FIELDS = ("dropped_behind", "dropped_stale", "dropped_corrupt", "dropped_evicted")
GOOD = clip_jpegs(n=3)


class Pipeline:
    """ingest + replicas a (leader) and b (warm standby), and the ledger of stored frames."""

    def __init__(self, redis_url: str, tmp: Path) -> None:
        common = {"cameras": f"{CAM}:{TOKEN}", "max_frame_bytes": MAX_FRAME_BYTES,
                  "max_frame_age_s": 120, "pending_claim_idle_s": 2}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ingest = Service(["ingest"], service_env(
            redis_url, ingest_bind=f"127.0.0.1:{self.port}", ingest_workers=1,
            camera_fps_limit=10000, **common), tmp, "ingest")
        self.services = [self.ingest]
        self.r = redis.Redis.from_url(redis_url)
        #: entry id -> seq ("" when it has none) of every frame stored by ingest or by hand
        self.stored: dict[str, str] = {}
        self.written = 0
        self.seq = 0
        self.cases = 0
        self.killed = 0  # replicas the tests killed on purpose
        wait_port(self.port, 30, self.ingest.proc)
        self.a = self._replica("a", redis_url, tmp, common)
        wait_for(lambda: self.r.get(keys.LEASE_INFERENCE) == b"a", 120, "a to lead", [self.a])
        self.b = self._replica("b", redis_url, tmp, common)
        wait_for(lambda: self.r.hget(keys.heartbeat("inference", "b"), "role") == b"standby",
                 120, "b to stand by", [self.b])
        self.epoch = self.r.get(keys.EPOCH_INFERENCE)

    def _replica(self, name: str, redis_url: str, tmp: Path, common: dict) -> Service:
        svc = Service(["inference", "--id", name], service_env(
            redis_url, model=MODEL_OPENVINO, inference_http_bind=f"127.0.0.1:{free_port()}",
            **common), tmp, f"inference-{name}")
        self.services.append(svc)
        return svc

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def post(self, body: bytes, seq: int | None = None,
             headers: dict[str, str | None] | None = None) -> requests.Response:
        seq = self.next_seq() if seq is None else seq
        h: dict[str, str | None] = {"Content-Type": "image/jpeg",
                                    "Authorization": f"Bearer {TOKEN}", "X-Frame-Seq": str(seq),
                                    "X-Capture-Ts": str(time.time_ns() // 1000)}
        h.update(headers or {})
        sent = {k: v for k, v in h.items() if v is not None}
        # a new connection per request: an oversized body leaves its connection closed
        resp = requests.post(f"{self.url}/api/v1/cameras/{CAM}/frames", data=body,
                             headers=sent, timeout=10)
        if resp.status_code == 202:
            self.stored[resp.json()["id"]] = str(seq)
        return resp

    def write(self, fields: dict[str, bytes | None]) -> str:
        """XADD an entry straight into the camera's stream (a good entry's fields, replaced or
        removed by ``fields``)."""
        seq = str(self.next_seq()).encode()
        entry = {"jpeg": GOOD[0], "ts": str(time.time_ns() // 1000).encode(), "seq": seq,
                 "w": b"640", "h": b"480", "rx": str(time.time_ns() // 1000).encode(),
                 "late": b"0"}
        entry.update(fields)
        entry = {k: v for k, v in entry.items() if v is not None}
        eid = self.r.xadd(keys.frames(CAM), entry).decode()
        value = entry.get("seq", b"")
        valid = value.isascii() and value.isdigit() and int(value) < 2**63
        self.stored[eid] = value.decode() if valid else ""
        self.written += 1
        return eid

    # ---- what the pipeline did -------------------------------------------------------------
    def outcomes(self) -> tuple[dict[str, str], dict[str, str]]:
        """(frame id -> seq of every result, frame id -> reason of every drop record)."""
        results = {f[b"frame"].decode(): f[b"seq"].decode()
                   for _i, f in self.r.xrange(keys.detections(CAM))}
        drops = {}
        for _i, f in self.r.xrange(keys.drops(CAM)):
            for eid in f[b"ids"].decode().split(","):
                assert eid not in drops, f"frame {eid} is in two drop records"
                drops[eid] = f[b"reason"].decode()
        return results, drops

    def unaccounted(self) -> list[str]:
        results, drops = self.outcomes()
        return [eid for eid in self.stored if eid not in results and eid not in drops]

    def alive(self) -> list[str]:
        return [s.name for s in self.services if s.proc.poll() is None]

    def settle(self) -> None:
        """Wait until every stored frame is accounted for; then a good frame must be processed
        and every invariant hold."""
        wait_for(lambda: not self.unaccounted() or len(self.alive()) < 3, 30,
                 "every stored frame processed or dropped", self.services)
        resp = self.post(GOOD[self.cases % len(GOOD)])
        assert resp.status_code == 202, resp.text
        good_id = resp.json()["id"]
        wait_for(lambda: good_id in self.outcomes()[0] or len(self.alive()) < 3, 30,
                 "the good frame's result", self.services)
        self.check(good_id)

    def check(self, good_id: str) -> None:
        assert self.alive() == ["ingest", "inference-a", "inference-b"], \
            "\n".join(s.log()[-3000:] for s in self.services)
        assert self.r.get(keys.LEASE_INFERENCE) == b"a", "the leader changed"
        assert self.r.get(keys.EPOCH_INFERENCE) == self.epoch, "there was a failover"
        results, drops = self.outcomes()
        assert good_id in results, f"the good frame was dropped ({drops.get(good_id)})"
        # what the leader writes is what every consumer's decoder accepts
        for eid, fields in self.r.xrevrange(keys.detections(CAM), count=3):
            assert decode_result(eid, fields).frame in results
        for eid, fields in self.r.xrevrange(keys.drops(CAM), count=3):
            decode_drop(eid, fields)
        assert not set(results) & set(drops), "a frame is both processed and dropped"
        assert not self.unaccounted(), f"frames neither processed nor dropped: " \
                                       f"{self.unaccounted()[:10]}"
        for eid, seq in self.stored.items():  # by seq too, where the frame had one
            if seq and eid in results:
                assert results[eid] == seq
        stats = {k.decode(): int(v) for k, v in self.r.hgetall(keys.stats(CAM)).items()}
        dropped = sum(stats.get(f, 0) for f in DROP_FIELDS)
        assert stats.get("accepted", 0) + self.written == stats.get("processed", 0) + dropped, \
            stats

    def figures(self) -> dict[str, int]:
        return {"poison_cases_tried": self.cases,
                "poison_service_exits": len(self.services) - len(self.alive()) - self.killed,
                "poison_frames_unaccounted": len(self.unaccounted())}

    def close(self) -> None:
        for svc in self.services:
            svc.stop()


@pytest.fixture(scope="module")
def pipeline(redis_server, tmp_path_factory):
    p = Pipeline(redis_server.url, tmp_path_factory.mktemp("poison"))
    yield p
    out = os.environ.get("CCTV_POISON_FIGURES")
    if out:
        (Path(out) / "frames.json").write_text(json.dumps(p.figures(), indent=1))
    p.close()


BODIES = body_cases(GOOD[0], MAX_FRAME_BYTES)


@pytest.mark.parametrize("path", ["ingest", "stream"])
@pytest.mark.parametrize("case", BODIES, ids=[c.name for c in BODIES])
def test_hostile_body(pipeline: Pipeline, case: BodyCase, path: str) -> None:
    pipeline.cases += 1
    if path == "ingest":
        try:
            resp = pipeline.post(case.body)
        except requests.ConnectionError:
            # ingest answers 413 and closes before reading an oversized body; the client may
            # see the close before the reply
            assert len(case.body) > MAX_FRAME_BYTES
        else:
            assert resp.status_code in case.ingest, resp.text
            if resp.status_code != 202:
                assert resp.json()["error"]  # a JSON error naming what was wrong
    else:
        pipeline.write({"jpeg": case.body})
    pipeline.settle()


@pytest.mark.parametrize("path", ["ingest", "stream"])
@pytest.mark.parametrize("case", HEADER_CASES, ids=[c.name for c in HEADER_CASES])
def test_junk_headers_and_fields(pipeline: Pipeline, case: HeaderCase, path: str) -> None:
    pipeline.cases += 1
    if path == "ingest":
        resp = requests.post(
            f"{pipeline.url}/api/v1/cameras/{CAM}/frames", data=GOOD[1],
            headers={k: v for k, v in ({"Content-Type": "image/jpeg",
                                        "Authorization": f"Bearer {TOKEN}",
                                        "X-Frame-Seq": str(pipeline.next_seq()),
                                        "X-Capture-Ts": str(time.time_ns() // 1000)}
                                       | case.headers).items() if v is not None}, timeout=10)
        assert resp.status_code in case.ingest, resp.text
    else:
        pipeline.write(case.fields)
    pipeline.settle()


@pytest.mark.parametrize("name", list(ENTRY_CASES))
def test_entries_only_a_direct_writer_can_make(pipeline: Pipeline, name: str) -> None:
    pipeline.cases += 1
    pipeline.write(ENTRY_CASES[name])
    pipeline.settle()


def test_camera_names_are_matched_whole(pipeline: Pipeline) -> None:
    pipeline.cases += 1
    for name in ("cam1%0A", "cam1%0D%0Ax", "%EF%BC%A3am1"):
        resp = requests.post(f"{pipeline.url}/api/v1/cameras/{name}/frames",
                                     data=GOOD[0], headers={"Content-Type": "image/jpeg",
                                                            "Authorization": f"Bearer {TOKEN}",
                                                            "X-Frame-Seq": "1",
                                                            "X-Capture-Ts": "1"}, timeout=10)
        assert resp.status_code == 400 and resp.json()["error"] == "bad_camera", name
    pipeline.settle()


def test_corrupt_frames_are_recorded_with_their_seqs(pipeline: Pipeline) -> None:
    """The drop records of the cases above name each corrupt frame's seq where it had one."""
    _results, drops = pipeline.outcomes()
    corrupt = [eid for eid, reason in drops.items() if reason == "corrupt"]
    assert len(corrupt) >= 20
    seqs = {s for _i, f in pipeline.r.xrange(keys.drops(CAM))
            if f[b"reason"] == b"corrupt" for s in f[b"seqs"].decode().split(",") if s}
    expected = {pipeline.stored[eid] for eid in corrupt if pipeline.stored.get(eid)}
    assert expected and expected <= seqs


def test_frames_read_by_a_deposed_leader_are_claimed(pipeline: Pipeline) -> None:
    """A replica that reads after it lost the lease (the read is not fenced) leaves frames
    pending under its name; the leader claims them once idle past CCTV_PENDING_CLAIM_IDLE_S."""
    pipeline.cases += 1
    pipeline.settle()  # the stream and its group exist
    entry = {"jpeg": GOOD[2], "ts": str(time.time_ns() // 1000), "seq": str(pipeline.next_seq()),
             "w": "640", "h": "480", "rx": "1", "late": "0"}
    pipe = pipeline.r.pipeline(transaction=True)  # nobody else can read it first
    pipe.xadd(keys.frames(CAM), entry)
    pipe.xreadgroup(keys.INFER_GROUP, "deposed", {keys.frames(CAM): ">"}, count=1)
    eid, reply = pipe.execute()
    assert reply[0][1][0][0] == eid
    pipeline.stored[eid.decode()] = entry["seq"]
    pipeline.written += 1
    wait_for(lambda: eid.decode() in pipeline.outcomes()[0], 30,
             "the stranded frame's result", pipeline.services)
    pipeline.settle()


def test_poisoned_pending_frame_does_not_kill_the_next_leader(pipeline: Pipeline) -> None:
    """The leader dies (kill -9) holding an undecodable frame; the standby claims it at
    take-over, acks it as corrupt, leads, and processes the next good frame. (Last: it changes
    the leader.)"""
    pipeline.cases += 1
    pipeline.settle()  # the stream and its group exist
    jpeg = BODIES[0].body  # the 65500x65500 frame header
    entry = {"jpeg": jpeg, "ts": str(time.time_ns() // 1000), "seq": str(pipeline.next_seq()),
             "w": "640", "h": "480", "rx": "1", "late": "0"}
    pipe = pipeline.r.pipeline(transaction=True)
    pipe.xadd(keys.frames(CAM), entry)
    pipe.xreadgroup(keys.INFER_GROUP, "a", {keys.frames(CAM): ">"}, count=1)
    eid, _reply = pipe.execute()
    pipeline.a.signal(signal.SIGKILL)
    pipeline.a.proc.wait(10)
    pipeline.killed += 1
    pipeline.stored[eid.decode()] = entry["seq"]
    pipeline.written += 1
    wait_for(lambda: pipeline.r.get(keys.LEASE_INFERENCE) == b"b", 30, "b to take over",
             pipeline.services)
    wait_for(lambda: pipeline.outcomes()[1].get(eid.decode()) == "corrupt", 30,
             "the poisoned frame dropped as corrupt", pipeline.services)
    resp = pipeline.post(GOOD[0])
    good = resp.json()["id"]
    wait_for(lambda: good in pipeline.outcomes()[0], 30, "b's first result", pipeline.services)
    assert pipeline.b.proc.poll() is None and pipeline.ingest.proc.poll() is None
    assert not pipeline.unaccounted()
