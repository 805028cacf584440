"""Active-standby inference with real processes and a real redis-server: kill -9, SIGTERM,
SIGSTOP (a paused leader must not publish), simultaneous starts, Redis restart."""

from __future__ import annotations

import multiprocessing
import signal
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cctv.core import keys
from cctv.core.redisconn import connect
from cctv.core.scripts import Scripts
from cctv.inference.lease import Lease

from accounting import Accounting
from support import (
    MODEL_OPENVINO,
    FrameSender,
    RedisServer,
    Service,
    clip_jpegs,
    free_port,
    service_env,
    start_listening,
    wait_for,
)

#: camera tokens of the test registry (ingest refuses tokens under 20 characters)
TOK1 = "tok1-16charsfortests"
TOK2 = "tok2-16charsfortests"

CAMERAS = "cam1:tok1-16charsfortests,cam2:tok2-16charsfortests"

#: the promises (docs/architecture.md): results again within 1.5 s of a kill -9 of the leader
#: (lease TTL 1 s), within 0.3 s of a planned hand-over (SIGTERM). Set by the lease TTL and
#: polling, not by CPU speed, so they hold on a busy machine.
KILL9_GOAL_S = 1.5
HANDOVER_GOAL_S = 0.3
#: rounds per failover test: enough for a median, few enough for the default suite
ROUNDS = 3


class Cluster:
    """redis (given) + ingest + inference replicas, all real processes."""

    def __init__(self, redis_server: RedisServer, tmp: Path) -> None:
        self.redis_server, self.tmp = redis_server, tmp
        self.replicas: dict[str, Service] = {}
        self.senders: list[FrameSender] = []
        self.ingest_port, self.ingest = start_listening(lambda port: Service(
            ["ingest"], service_env(redis_server.url, cameras=CAMERAS,
                                    ingest_bind=f"127.0.0.1:{port}", ingest_workers=1),
            tmp, f"ingest-{port}"))

    def replica(self, name: str) -> Service:
        svc = Service(["inference", "--id", name], service_env(
            self.redis_server.url, cameras=CAMERAS, model=MODEL_OPENVINO,
            inference_http_bind=f"127.0.0.1:{free_port()}"), self.tmp, f"inference-{name}")
        self.replicas[name] = svc
        return svc

    def send(self, jpegs: list[bytes], fps: float = 10) -> None:
        url = f"http://127.0.0.1:{self.ingest_port}"
        self.senders = [FrameSender(url, cam, tok, jpegs, fps).start()
                        for cam, tok in (("cam1", TOK1), ("cam2", TOK2))]

    def stop_senders(self) -> None:
        for s in self.senders:
            s.stop()

    def close(self) -> None:
        self.stop_senders()
        for svc in [*self.replicas.values(), self.ingest]:
            svc.signal(signal.SIGCONT)
            svc.stop()


def leader(rdb) -> str | None:
    value = rdb.get(keys.LEASE_INFERENCE)
    return value.decode() if value else None


def role_of(rdb, name: str) -> str | None:
    value = rdb.hget(keys.heartbeat("inference", name), "role")
    return value.decode() if value else None


def failovers(rdb) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} | {"id": i.decode()}
            for i, f in rdb.xrange(keys.FAILOVERS)]


def results_of_epoch(rdb, epoch: int) -> int:
    return sum(1 for cam in ("cam1", "cam2") for _i, f in rdb.xrange(keys.detections(cam))
               if f[b"epoch"] == str(epoch).encode())


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    return clip_jpegs(n=60, step=3)


@pytest.fixture()
def cluster(redis_server, rdb, tmp_path):
    c = Cluster(redis_server, tmp_path)
    a = c.replica("a")
    wait_for(lambda: leader(rdb) == "a", 90, "replica a to lead", [a])
    b = c.replica("b")
    wait_for(lambda: role_of(rdb, "b") == "standby", 90, "replica b to stand by", [b])
    yield c
    c.close()


def _finish(c: Cluster, rdb) -> list[Accounting]:
    """Stop the cameras; every frame ingest acknowledged is processed or counted as dropped,
    and ingest refused none."""
    c.stop_senders()
    frames = [sender.account(rdb) for sender in c.senders]
    for acc in frames:
        acc.check()
    return frames


@dataclass
class TakeOver:
    """One round: the leader signalled, the standby took over."""

    old: str
    new: str
    epoch: int  # the new leader's
    reason: str  # of the acquisition: expired (kill -9) or released (SIGTERM)
    gap_s: float  # last result of the old leader -> first of the new one, timed by Redis
    first_model_call_s: float  # the new leader's first model call, within gap_s
    first_result_ms: int  # Redis time of the new leader's first result
    exit_code: int | None

    @property
    def takeover_s(self) -> float:
        """The gap less the new leader's first model call: what the lease, its polling and
        the hand-over take. The model call is CPU-bound (a model call takes ten times longer
        on a saturated machine) and is guarded as a ratio by the performance guard."""
        return round(self.gap_s - self.first_model_call_s, 3)


def first_model_call_s(rdb, epoch: int) -> float:
    """The model call time of the first result of ``epoch`` (over both cameras)."""
    firsts = [(i, f) for cam in ("cam1", "cam2") for i, f in rdb.xrange(keys.detections(cam))
              if f[b"epoch"] == str(epoch).encode()]
    first = min(firsts, key=lambda e: tuple(map(int, e[0].decode().split("-"))))
    return float(first[1][b"infer_ms"]) / 1000


def take_over_rounds(c: Cluster, rdb, sig: int, rounds: int) -> list[TakeOver]:
    """``rounds`` times: signal the leader, wait for the standby's first result, start the
    old replica again and wait until it is the warm standby. Needs results flowing."""
    out: list[TakeOver] = []
    for _ in range(rounds):
        old = leader(rdb)
        assert old in c.replicas, f"leader {old!r} is not one of ours"
        other = "b" if old == "a" else "a"
        wait_for(lambda o=other: role_of(rdb, o) == "standby", 90, f"{other} to stand by",
                 [c.replicas[other]])
        epoch = int(rdb.get(keys.EPOCH_INFERENCE))
        wait_for(lambda e=epoch: results_of_epoch(rdb, e) > 5, 60,
                 f"results from the leader of epoch {epoch}", [c.replicas[old]])
        c.replicas[old].signal(sig)

        def first_result(e: int = epoch + 1) -> dict[str, str] | None:
            return next((f for f in failovers(rdb)
                         if f["event"] == "first_result" and f["epoch"] == str(e)), None)

        wait_for(lambda: first_result() is not None, 30, "the first result of the new leader",
                 [c.replicas[other]])
        first = first_result()
        acquired = next(f for f in failovers(rdb)
                        if f["event"] == "acquired" and f["epoch"] == str(epoch + 1))
        code = c.replicas[old].proc.wait(15)
        c.replicas[old].stop()
        out.append(TakeOver(old=acquired["old"], new=acquired["new"], epoch=epoch + 1,
                            reason=acquired["reason"], gap_s=int(first["gap_ms"]) / 1000,
                            first_model_call_s=first_model_call_s(rdb, epoch + 1),
                            first_result_ms=int(first["id"].split("-")[0]), exit_code=code))
        c.replica(old)  # comes back as the warm standby
        wait_for(lambda o=old: role_of(rdb, o) == "standby", 90, f"{old} to stand by again",
                 [c.replicas[old]])
    return out


def assert_gaps_within(gaps: list[float], goal_s: float, what: str, detail: object = ""
                       ) -> None:
    """The promise over rounds: median gap <= goal, and no round above twice the goal."""
    assert gaps, f"{what}: no rounds"
    median = statistics.median(gaps)
    print(f"{what}: take-over gaps {gaps} s, median {median:.3f} s (goal {goal_s} s)")
    assert median <= goal_s, f"{what}: median take-over gap {median:.3f} s > goal {goal_s} s " \
                             f"(rounds: {gaps}) {detail}"
    assert max(gaps) <= 2 * goal_s, f"{what}: a take-over gap {max(gaps):.3f} s > 2 x goal " \
                                    f"{goal_s} s (rounds: {gaps}) {detail}"


@pytest.mark.slow
def test_kill9_of_the_leader(cluster: Cluster, rdb, jpegs) -> None:
    cluster.send(jpegs)
    rounds = take_over_rounds(cluster, rdb, signal.SIGKILL, ROUNDS)
    frames = _finish(cluster, rdb)
    for r in rounds:
        assert r.reason == "expired" and r.new != r.old and r.exit_code == -signal.SIGKILL, r
    assert_gaps_within([r.takeover_s for r in rounds], KILL9_GOAL_S, "kill -9", rounds)
    assert all(f.processed > 0 for f in frames), frames


@pytest.mark.slow
def test_sigterm_is_a_planned_handover(cluster: Cluster, rdb, jpegs) -> None:
    cluster.send(jpegs)
    rounds = take_over_rounds(cluster, rdb, signal.SIGTERM, ROUNDS)
    _finish(cluster, rdb)
    for r in rounds:
        assert r.reason == "released" and r.new != r.old and r.exit_code == 0, r
    assert_gaps_within([r.takeover_s for r in rounds], HANDOVER_GOAL_S, "SIGTERM hand-over",
                       rounds)


@pytest.mark.slow
def test_paused_leader_never_publishes_after_losing_the_lease(cluster: Cluster, rdb,
                                                              jpegs) -> None:
    cluster.send(jpegs)
    wait_for(lambda: results_of_epoch(rdb, 1) > 10, 90, "results from the first leader",
             list(cluster.replicas.values()))
    a = cluster.replicas["a"]
    a.signal(signal.SIGSTOP)
    wait_for(lambda: leader(rdb) == "b" and results_of_epoch(rdb, 2) > 5, 30,
             "the standby to take over", [cluster.replicas["b"]])
    epoch1_before = results_of_epoch(rdb, 1)
    a.signal(signal.SIGCONT)
    wait_for(lambda: "stepped down" in a.log() or "lease lost" in a.log(), 15,
             "the old leader to step down", [a])
    # the new leader publishes 20 more results (2 s of both cameras): time enough for a
    # deposed leader's stale batch to have landed, had the fencing let it
    epoch2_now = results_of_epoch(rdb, 2)
    wait_for(lambda: results_of_epoch(rdb, 2) >= epoch2_now + 20, 30,
             "more results from the new leader", [cluster.replicas["b"]])
    assert results_of_epoch(rdb, 1) == epoch1_before, "the deposed leader published results"
    assert leader(rdb) == "b"
    wait_for(lambda: role_of(rdb, "a") == "standby", 10, "a to report standby", [a])
    _finish(cluster, rdb)


def _race(url: str, worker: str, barrier, out) -> None:
    client = connect(url)
    lease = Lease(client, Scripts(client), worker, 5000)
    barrier.wait()
    out.put((worker, lease.try_acquire() is not None))


def test_simultaneous_start_gives_exactly_one_leader(redis_server, rdb) -> None:
    ctx = multiprocessing.get_context("fork")
    for round_ in range(20):
        rdb.delete(keys.LEASE_INFERENCE)
        barrier, out = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(redis_server.url, f"w{round_}-{i}", barrier,
                                                 out)) for i in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(10)
        winners = [w for w, won in (out.get(timeout=5) for _ in procs) if won]
        assert len(winners) == 1, f"round {round_}: winners {winners}"
        assert leader(rdb) == winners[0]
    assert int(rdb.get(keys.EPOCH_INFERENCE)) == 20


@pytest.mark.slow
def test_redis_restart_mid_stream(tmp_path, jpegs) -> None:
    server = RedisServer().start()
    rdb = server.client()
    c = Cluster(server, tmp_path)
    try:
        a = c.replica("a")
        wait_for(lambda: leader(rdb) == "a", 90, "replica a to lead", [a])
        c.send(jpegs)
        wait_for(lambda: results_of_epoch(rdb, 1) > 10, 30, "results before the restart")
        server.stop()
        time.sleep(2)  # an outage of 2 s (not a wait for anything)
        server.start()  # on the same port (start retries while the old socket lingers)
        rdb = server.client()
        # everything (streams, lease, epoch) was lost with the unpersisted redis: the
        # services must reconnect, re-create what they need and carry on by themselves
        wait_for(lambda: sum(rdb.xlen(keys.detections(cam)) for cam in ("cam1", "cam2")) > 10,
                 60, "results after the restart", [a, c.ingest])
        assert a.proc.poll() is None and c.ingest.proc.poll() is None
    finally:
        c.close()
        server.stop()
