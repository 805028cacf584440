"""A replicated Redis (primary + 2 replicas + 3 Sentinels, real processes on loopback, the
production ACL) under the services: kill -9 the primary mid-stream and the Sentinels promote a
replica; ingest, inference and the lease follow it by themselves, every acknowledged frame is
accounted for, a deposed leader never publishes after the new one, epochs never go backwards;
a primary without its replicas acknowledges nothing."""

from __future__ import annotations

import signal
import time

import pytest
import requests

from cctv.core import keys
from cctv.core.redisconn import NotReplicated, RedisTarget, connect
from cctv.core.scripts import Scripts, is_stale_error
from cctv.inference.lease import Lease

from redis_ha import MASTER_NAME, ReplicatedRedis
from support import (
    MODEL_OPENVINO,
    VIEWER_PASSWORD,
    VIEWER_USER,
    FrameSender,
    Service,
    clip_jpegs,
    free_port,
    post_frame,
    redis_password_for,
    running,
    start_listening,
    wait_for,
)

TOK1, TOK2 = "tok1-16charsfortests", "tok2-16charsfortests"
CAMERAS = f"cam1:{TOK1},cam2:{TOK2}"
WAIT_MS = 200


@pytest.fixture()
def ha():
    cluster = ReplicatedRedis(replicas=2, sentinels=3, min_replicas=1)
    cluster.wait_sentinels_know_each_other()
    yield cluster
    cluster.close()


def sentinel_client(ha: ReplicatedRedis, user: str):
    return connect(RedisTarget(sentinels=tuple(("127.0.0.1", s.port) for s in ha.sentinels),
                               master_name=MASTER_NAME, username=user,
                               password=redis_password_for(user)), timeout_s=1.0, name=user)


def start_ingest(ha: ReplicatedRedis, tmp, **cctv):
    return start_listening(lambda port: Service(["ingest"], ha.env(
        "ingest", cameras=CAMERAS, ingest_bind=f"127.0.0.1:{port}", ingest_workers=1,
        redis_min_replicas_ack=1, redis_wait_timeout_ms=WAIT_MS, **cctv), tmp,
        f"ingest-{port}"))


def kill_primary(ha: ReplicatedRedis):
    old = ha.current_primary()
    t0 = time.monotonic()
    old.kill()
    new = ha.wait_sentinels_agree(timeout_s=30, other_than=old)
    return old, new, time.monotonic() - t0


def _writable(client) -> bool:
    try:
        client.set("probe", 1)
        return True
    except Exception:  # noqa: BLE001 - NOREPLICAS while the replicas catch up
        return False


def epochs_in_order(rdb, cam: str) -> list[int]:
    return [int(f[b"epoch"]) for _i, f in rdb.xrange(keys.detections(cam))]


def test_lease_epoch_survives_failover_and_fences_the_deposed_leader(ha) -> None:
    """The epoch bump is WAITed, so the promoted replica has it: the next acquisition gets a
    higher epoch, and the old holder's fenced writes are refused on the new primary."""
    c1, c2 = sentinel_client(ha, "inference"), sentinel_client(ha, "inference")
    s1, s2 = Scripts(c1), Scripts(c2)
    a = Lease(c1, s1, "w1", 500, replicas=1, wait_timeout_ms=WAIT_MS)
    got = a.try_acquire()
    assert got is not None and got.epoch == 1
    a.step_down()  # w1 stops renewing: as if cut off by the failover
    _old, new, _s = kill_primary(ha)
    admin = ha.admin(new)
    assert int(admin.get(keys.EPOCH_INFERENCE) or 0) >= 1, "the promoted replica lost the epoch"
    b = Lease(c2, s2, "w2", 500, replicas=1, wait_timeout_ms=WAIT_MS)
    wait_for(lambda: ha.connected_replicas(new) >= 1, 20, "a replica of the new primary")
    acquired = None
    end = time.monotonic() + 20
    while acquired is None and time.monotonic() < end:
        try:
            acquired = b.try_acquire()
        except (NotReplicated, ConnectionError) as exc:  # the failover settling
            print("retry:", exc)
        if acquired is None:
            time.sleep(0.1)
    assert acquired is not None and acquired.epoch == 2
    # w1 (epoch 1) tries to publish on the new primary: refused by the fence
    admin.xadd(keys.frames("cam1"), {"seq": "1"})
    admin.xgroup_create(keys.frames("cam1"), keys.INFER_GROUP, id="0")
    with pytest.raises(Exception) as err:
        s1.drop_frames(keys=[keys.LEASE_INFERENCE, keys.EPOCH_INFERENCE, keys.frames("cam1"),
                             keys.stats("cam1"), keys.drops("cam1")],
                       args=["w1", 1, "behind", keys.INFER_GROUP, 1, "0-1", "1"])
    assert is_stale_error(err.value)
    b.step_down()


def test_isolated_primary_refuses_frames(ha, tmp_path) -> None:
    """Replicas stopped: ingest answers 503 (WAIT timed out, then NOREPLICAS once the replicas
    are past min-replicas-max-lag), never 202; a resend after the replicas return is stored
    once (answered as a duplicate when the first copy had reached the primary)."""
    jpeg = clip_jpegs(n=1)[0]
    port, ingest = start_ingest(ha, tmp_path)
    url = f"http://127.0.0.1:{port}"
    with running([ingest]):
        s = requests.Session()
        assert post_frame(s, url, "cam1", TOK1, jpeg, 1).status_code == 202
        replicas = [n for n in ha.servers if n is not ha.current_primary()]
        for n in replicas:
            n.signal(signal.SIGSTOP)
        try:
            answers = {}
            for seq in range(2, 40):
                r = post_frame(s, url, "cam1", TOK1, jpeg, seq)
                answers[seq] = (r.status_code, r.json().get("error"), r.headers.get("Retry-After"))
                time.sleep(0.05)
        finally:
            for n in replicas:
                n.signal(signal.SIGCONT)
        assert all(status == 503 and after for status, _e, after in answers.values()), answers
        errors = {e for _s, e, _a in answers.values()}
        assert "no_replicas" in errors and "not_replicated" in errors, errors
        ha.wait_replicated(2)
        admin = ha.admin()
        # writable again once a replica has acked within min-replicas-max-lag (~1 s after
        # SIGCONT: replicas ack once a second)
        wait_for(lambda: _writable(admin), 15, "the primary to accept writes again")
        # the sender resends every refused frame: each is stored once
        for seq in answers:
            r = post_frame(s, url, "cam1", TOK1, jpeg, seq)
            assert r.status_code in (200, 202), (seq, r.status_code, r.text)
        seqs = [int(f[b"seq"]) for _i, f in admin.xrange(keys.frames("cam1"))]
        assert sorted(seqs) == list(range(1, 40)), seqs
        stats = {k.decode(): int(v) for k, v in admin.hgetall(keys.stats("cam1")).items()}
        assert stats["accepted"] == 39
        metrics = requests.get(f"{url}/metrics", timeout=5).text
        assert 'cctv_ingest_unreplicated_total{reason="noreplicas"}' in metrics


def test_pipeline_follows_a_redis_failover(ha, tmp_path) -> None:
    """kill -9 the primary while two cameras stream through ingest into an inference leader
    (and a warm standby), all through the Sentinels: results flow again from the promoted
    replica, every acknowledged frame is processed or counted, epochs never go backwards."""
    jpegs = clip_jpegs(n=40, step=3)
    port, ingest = start_ingest(ha, tmp_path)
    replicas = [Service(["inference", "--id", name], ha.env(
        "inference", cameras=CAMERAS, model=MODEL_OPENVINO, redis_min_replicas_ack=1,
        redis_wait_timeout_ms=WAIT_MS, inference_http_bind=f"127.0.0.1:{free_port()}"),
        tmp_path, f"inference-{name}") for name in ("a", "b")]
    with running([ingest, *replicas]):
        admin = ha.admin()
        wait_for(lambda: admin.get(keys.LEASE_INFERENCE) is not None, 120, "a leader",
                 replicas)
        url = f"http://127.0.0.1:{port}"
        senders = [FrameSender(url, cam, tok, jpegs, 5).start()
                   for cam, tok in (("cam1", TOK1), ("cam2", TOK2))]
        try:
            wait_for(lambda: admin.xlen(keys.detections("cam1")) > 5, 60,
                     "results before the failover", [ingest, *replicas])
            epoch_before = int(admin.get(keys.EPOCH_INFERENCE))
            _old, new, took_s = kill_primary(ha)
            print(f"sentinels promoted {new.name} in {took_s:.2f}s")
            admin = ha.admin(new)
            acked_at_failover = [len(s.tally.snapshot()[1]) for s in senders]
            wait_for(lambda: all(len(s.tally.snapshot()[1]) > n + 10
                                 for s, n in zip(senders, acked_at_failover, strict=True)),
                     60, "ingest to accept frames again", [ingest])
            wait_for(lambda: any(e > epoch_before for e in epochs_in_order(admin, "cam1")) or
                     len(epochs_in_order(admin, "cam1")) > 20, 60, "results after the failover",
                     [ingest, *replicas])
            n_after = admin.xlen(keys.detections("cam1"))
            wait_for(lambda: admin.xlen(keys.detections("cam1")) > n_after + 5, 60,
                     "results to keep flowing", replicas)
        finally:
            for s in senders:
                s.stop()
        for s in senders:
            acc = s.account(admin, timeout_s=60)
            print(s.camera, acc.summary())
            # during the failover ingest answers 503 (the sender keeps and resends those)
            acc.check(refused_ok=True)
            assert set(acc.refused_by_status) <= {"503"}, acc.refused_by_status
            assert acc.acknowledged > 0
        for cam in ("cam1", "cam2"):
            epochs = epochs_in_order(admin, cam)
            assert epochs == sorted(epochs), f"{cam}: a result of an older epoch after a newer"
        assert int(admin.get(keys.EPOCH_INFERENCE)) >= epoch_before
        for svc in (ingest, *replicas):
            assert svc.proc.poll() is None, svc.log()[-2000:]


def test_the_dashboard_shows_redis_and_records_its_failover(ha, tmp_path) -> None:
    """web through the Sentinels: /api/v1/cluster names the primary, its two replicas online
    and three Sentinels that see it; kill -9 the primary and the snapshot names the promoted
    replica, and the failover history holds the Redis failover."""
    port, web = start_listening(lambda port: Service(["web"], ha.env(
        "web", web_bind=f"127.0.0.1:{port}"), tmp_path, f"web-{port}"))
    auth = (VIEWER_USER, VIEWER_PASSWORD)
    url = f"http://127.0.0.1:{port}"

    def cluster() -> dict:
        return requests.get(url + "/api/v1/cluster", auth=auth, timeout=10).json()

    with running([web]):
        primary = ha.current_primary()
        wait_for(lambda: cluster()["redis"].get("primary") == f"127.0.0.1:{primary.port}", 30,
                 "the primary on the dashboard", [web])
        snap = cluster()
        assert snap["redis"]["role"] == "master"
        assert [r["state"] for r in snap["redis"]["replicas"]] == ["online", "online"]
        assert len(snap["sentinels"]) == 3 and all(
            t["ok"] and t["primary"] == f"127.0.0.1:{primary.port}" and not t["down"]
            and t["other_sentinels"] == 2 for t in snap["sentinels"]), snap["sentinels"]
        _old, new, _took = kill_primary(ha)
        wait_for(lambda: cluster()["redis"].get("primary") == f"127.0.0.1:{new.port}", 60,
                 "the promoted replica on the dashboard", [web])
        history = requests.get(url + "/api/v1/failovers", auth=auth, timeout=10).json()["redis"]
        assert history and history[0]["reason"] == "failover", history
        assert history[0]["old"] == f"127.0.0.1:{primary.port}"
        assert history[0]["new"] == f"127.0.0.1:{new.port}"
        wait_for(lambda: [f["new"] for f in cluster()["redis_failovers"]] == [
            f"127.0.0.1:{new.port}"], 10, "the failover in the dashboard's history", [web])
