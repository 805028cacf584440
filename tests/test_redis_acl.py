"""The Redis ACL (core/redis_acl.py) on a real redis-server: every service user may do its
work and is refused outside its rules; the default user can do nothing. (The whole suite runs
every service as its own user, and a refusal fails the test that caused it: tests/conftest.py.)"""

from __future__ import annotations

import pytest
import redis

from cctv.core import keys
from cctv.core.redis_acl import USERS, acl_lines, password_hash
from cctv.core.scripts import Scripts

from support import RedisServer, redis_password_for


def as_user(server: RedisServer, user: str) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, username=user,
                       password=redis_password_for(user))


def refused(call) -> bool:
    try:
        call()
    except redis.exceptions.NoPermissionError:
        return True
    return False


@pytest.fixture()
def users(redis_server: RedisServer, rdb):
    clients = {u: as_user(redis_server, u) for u in USERS}
    yield clients
    for c in clients.values():
        c.close()
    redis_server.acl_denials()  # the refusals below are the point of these tests


def test_default_user_is_off(redis_server: RedisServer, rdb) -> None:
    anon = redis.Redis(host="127.0.0.1", port=redis_server.port)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anon.get("x")
    redis_server.acl_denials()


def test_wrong_password_refused(redis_server: RedisServer, rdb) -> None:
    bad = redis.Redis(host="127.0.0.1", port=redis_server.port, username="web", password="nope")
    with pytest.raises(redis.exceptions.AuthenticationError):
        bad.ping()
    assert any("auth" in d for d in redis_server.acl_denials())


def test_web_reads_but_cannot_write_frames_or_lease(users) -> None:
    web = users["web"]
    users["admin"].xadd(keys.frames("cam1"), {"seq": "1"})
    assert web.xlen(keys.frames("cam1")) == 1  # reads what it shows
    assert web.get(keys.LEASE_INFERENCE) is None
    assert refused(lambda: web.xadd(keys.frames("cam1"), {"seq": "2"}))
    assert refused(lambda: web.set(keys.LEASE_INFERENCE, "me"))
    assert refused(lambda: web.incr(keys.EPOCH_INFERENCE))
    assert refused(lambda: web.xack(keys.frames("cam1"), keys.INFER_GROUP, "0-1"))
    assert refused(lambda: web.flushall())
    assert refused(lambda: web.keys("*"))
    assert refused(lambda: web.config_get("*"))
    web.set(keys.web_session("abc"), "viewer", ex=60)  # its own sessions
    assert refused(lambda: web.set(keys.heartbeat("inference", "x"), "1"))


def test_ingest_cannot_touch_the_lease_results_or_events(users) -> None:
    ingest = users["ingest"]
    assert refused(lambda: ingest.set(keys.LEASE_INFERENCE, "me"))
    assert refused(lambda: ingest.get(keys.EPOCH_INFERENCE))
    assert refused(lambda: ingest.xadd(keys.detections("cam1"), {"x": "1"}))
    assert refused(lambda: ingest.xadd(keys.EVENTS, {"x": "1"}))
    assert refused(lambda: ingest.get(keys.web_session("abc")))
    assert refused(lambda: ingest.xreadgroup(keys.INFER_GROUP, "c", {keys.frames("cam1"): ">"}))
    assert refused(lambda: ingest.hset(keys.heartbeat("web", "x"), "a", "1"))
    assert refused(lambda: ingest.flushall())
    assert refused(lambda: ingest.config_set("min-replicas-to-write", "0"))


def test_inference_cannot_write_frames_outside_the_scripts_keys_or_sessions(users) -> None:
    inf = users["inference"]
    assert refused(lambda: inf.get(keys.web_session("abc")))
    assert refused(lambda: inf.set(keys.dedup("cam1", 1), "x"))
    assert refused(lambda: inf.sadd(keys.CAMERAS_ACTIVE, "evil"))  # reads the set only
    assert refused(lambda: inf.xadd(keys.EVENTS, {"x": "1"}))
    assert refused(lambda: inf.flushall())
    # its own work: the lease script (the fence's keys and the release channel)
    got = Scripts(inf).lease_acquire(
        keys=[keys.LEASE_INFERENCE, keys.EPOCH_INFERENCE, keys.LEASE_HOLDER],
        args=["w1", 1000])
    assert int(got[0]) == 1


def test_events_acks_results_but_cannot_write_them(users) -> None:
    ev, admin = users["events"], users["admin"]
    admin.xadd(keys.detections("cam1"), {"frame": "1-0"})
    ev.xgroup_create(keys.detections("cam1"), keys.EVENTS_GROUP, id="0")
    assert ev.xreadgroup(keys.EVENTS_GROUP, "events", {keys.detections("cam1"): ">"})
    assert refused(lambda: ev.xadd(keys.detections("cam1"), {"frame": "2-0"}))
    assert refused(lambda: ev.xadd(keys.frames("cam1"), {"seq": "1"}))
    assert refused(lambda: ev.set(keys.LEASE_INFERENCE, "me"))
    assert refused(lambda: ev.delete(keys.detections("cam1")))
    ev.xadd(keys.EVENTS, {"type": "event"})  # its own stream


def test_sentinel_and_replication_users_cannot_read_data(users) -> None:
    users["admin"].set(keys.LEASE_INFERENCE, "w1")
    for user in ("sentinel", "replication"):
        assert refused(lambda u=user: users[u].get(keys.LEASE_INFERENCE))
        assert refused(lambda u=user: users[u].xadd(keys.frames("cam1"), {"seq": "1"}))


def test_acl_file_stores_hashes_not_passwords() -> None:
    text = "\n".join(acl_lines({"web": "s3cret-pass"}))
    assert "s3cret-pass" not in text and password_hash("s3cret-pass") in text
    assert text.startswith("user default off")
    with pytest.raises(ValueError):
        acl_lines({"nobody": "x"})
    with pytest.raises(ValueError):
        acl_lines({"web": "has space"})


def test_script_writes_survive_a_restart_from_the_append_only_file(tmp_path) -> None:
    # Redis replays its append-only file as the default user and re-checks that user's
    # permissions at each MULTI/EXEC (a script's writes): with the default user stripped of
    # them, a restart silently dropped every scripted write
    server = RedisServer(dir=tmp_path, extra=("--appendonly", "yes")).start()
    try:
        inf = as_user(server, "inference")
        got = Scripts(inf).lease_acquire(
            keys=[keys.LEASE_INFERENCE, keys.EPOCH_INFERENCE, keys.LEASE_HOLDER],
            args=["w1", 60_000])
        assert int(got[0]) == 1
        epoch = int(inf.get(keys.EPOCH_INFERENCE))
        inf.close()
        with server.client() as admin:
            admin.shutdown()  # a clean stop: the file is fsynced
        server.proc.wait(10)
        server.start()
        with server.client() as admin:
            assert admin.get(keys.EPOCH_INFERENCE) is not None, "the scripted write was lost"
            assert int(admin.get(keys.EPOCH_INFERENCE)) == epoch
            assert admin.get(keys.LEASE_INFERENCE) == b"w1"
        # ... and a client that does not log in still can do nothing
        anon = redis.Redis(host="127.0.0.1", port=server.port)
        with pytest.raises(redis.exceptions.AuthenticationError):
            anon.get(keys.EPOCH_INFERENCE)
    finally:
        server.stop()
