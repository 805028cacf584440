"""The fence of the inference writes: written once (core/scripts.py), and every fenced script
refuses a replica that does not hold the lease with its epoch, writing nothing, on a real
redis-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from cctv.core import keys
from cctv.core.scripts import FENCE, Scripts, is_stale_error

ROOT = Path(__file__).resolve().parents[1]

#: every fenced script with arguments past the fence that would write if it let them through
CALLS = {
    "publish_result": lambda: dict(
        keys=[keys.LEASE_INFERENCE, keys.EPOCH_INFERENCE, keys.frames("cam"),
              keys.detections("cam"), keys.stats("cam"), keys.LEADER_LAST_RESULT,
              keys.FAILOVERS],
        args=["0-1", 100, keys.INFER_GROUP, 0, "seq", "1"]),
    "drop_frames": lambda: dict(
        keys=[keys.LEASE_INFERENCE, keys.EPOCH_INFERENCE, keys.frames("cam"),
              keys.stats("cam"), keys.drops("cam")],
        args=["corrupt", keys.INFER_GROUP, 1, "0-1", "1"]),
    "skip_backlog": lambda: dict(
        keys=[keys.LEASE_INFERENCE, keys.EPOCH_INFERENCE, keys.frames("cam"),
              keys.stats("cam"), keys.drops("cam"), keys.frame_index("cam")],
        args=[keys.INFER_GROUP]),
    "save_track_state": lambda: dict(
        keys=[keys.LEASE_INFERENCE, keys.EPOCH_INFERENCE, keys.track_state("cam")],
        args=[60000, b"state"]),
}

#: what each script did once past the fence
PASSED = {
    "publish_result": lambda rdb, reply: rdb.xlen(keys.detections("cam")) == 1 and reply,
    "drop_frames": lambda rdb, reply: reply == 1
    and rdb.hget(keys.stats("cam"), "dropped_corrupt") == b"1",
    "skip_backlog": lambda rdb, reply: reply == 0,  # no index: nothing to skip
    "save_track_state": lambda rdb, reply: reply == 1
    and rdb.get(keys.track_state("cam")) == b"state",
}


def test_the_fence_is_written_once() -> None:
    refusal = "STALE fenced"
    found = {str(p.relative_to(ROOT)): p.read_text().count(refusal)
             for p in (ROOT / "services").rglob("*.py") if refusal in p.read_text()}
    assert found == {"services/cctv/core/scripts.py": 1}, found
    assert FENCE.count(refusal) == 1


@pytest.mark.parametrize("script", sorted(CALLS))
@pytest.mark.parametrize("holder, epoch", [("other", "3"), ("me", "2"), (None, "3")])
def test_a_fenced_script_refuses_and_writes_nothing(rdb, script: str, holder: str | None,
                                                    epoch: str) -> None:
    rdb.flushall()
    if holder:
        rdb.set(keys.LEASE_INFERENCE, holder)
    rdb.set(keys.EPOCH_INFERENCE, epoch)
    rdb.xadd(keys.frames("cam"), {"seq": "1"}, id="0-1")
    rdb.xgroup_create(keys.frames("cam"), keys.INFER_GROUP, id="0")
    rdb.xreadgroup(keys.INFER_GROUP, "me", {keys.frames("cam"): ">"})
    before = {k: rdb.dump(k) for k in rdb.keys("*")}
    call = CALLS[script]()
    fn = getattr(Scripts(rdb), script)
    with pytest.raises(Exception) as err:  # noqa: B017 - the check is the next line
        fn(keys=call["keys"], args=["me", "3", *call["args"]])
    assert is_stale_error(err.value), err.value
    after = {k: rdb.dump(k) for k in rdb.keys("*")}
    assert after == before, "a refused write changed Redis"
    assert rdb.xpending(keys.frames("cam"), keys.INFER_GROUP)["pending"] == 1


@pytest.mark.parametrize("script", sorted(CALLS))
def test_the_holder_of_lease_and_epoch_passes_the_fence(rdb, script: str) -> None:
    rdb.flushall()
    rdb.set(keys.LEASE_INFERENCE, "me")
    rdb.set(keys.EPOCH_INFERENCE, "3")
    rdb.xadd(keys.frames("cam"), {"seq": "1"}, id="0-1")
    rdb.xgroup_create(keys.frames("cam"), keys.INFER_GROUP, id="0")
    rdb.xreadgroup(keys.INFER_GROUP, "me", {keys.frames("cam"): ">"})
    call = CALLS[script]()
    reply = getattr(Scripts(rdb), script)(keys=call["keys"], args=["me", "3", *call["args"]])
    assert PASSED[script](rdb, reply)
