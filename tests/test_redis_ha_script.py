"""docker/redis/cctv-redis.sh, the stack's Redis and Sentinel start script, run for real on
loopback: a primary, a replica of it, a Sentinel that monitors them and that a restarted
replica asks for the primary; the ACL and the passwords come from secret files (never a command
line), and a primary without a replica refuses writes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import redis

from support import ROOT, free_port, redis_acl_file, redis_password_for, wait_for, wait_port

SCRIPT = ROOT / "docker" / "redis" / "cctv-redis.sh"


def start(mode: str, data: Path, env: dict[str, str]) -> subprocess.Popen:
    data.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["sh", str(SCRIPT), mode],
                            env={**os.environ, **env, "REDIS_DATA_DIR": str(data)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def admin(port: int) -> redis.Redis:
    return redis.Redis(port=port, username="admin", password=redis_password_for("admin"),
                       socket_timeout=2)


def writable(client: redis.Redis) -> bool:
    try:
        client.set("probe", 1)
        return True
    except redis.ResponseError:
        return False


def test_server_replica_and_sentinel_from_secrets(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    redis_acl_file(secrets).rename(secrets / "cctv_redis_acl")
    for user in ("replication", "sentinel"):
        (secrets / f"cctv_redis_pw_{user}").write_text(redis_password_for(user) + "\n")
    p1, p2, s1 = free_port(), free_port(), free_port()
    base = {"CCTV_REDIS_SECRETS_DIR": str(secrets), "REDIS_PRIMARY_HOST": "127.0.0.1",
            "REDIS_PRIMARY_PORT": str(p1), "REDIS_SENTINELS": f"127.0.0.1:{s1}"}
    procs: list[subprocess.Popen] = []
    try:
        procs.append(start("server", tmp_path / "r1", {**base, "REDIS_ANNOUNCE_HOST": "127.0.0.1",
                                                       "REDIS_PORT": str(p1)}))
        wait_port(p1, 10, procs[-1])
        primary = admin(p1)
        assert primary.execute_command("ROLE")[0] == b"master"
        with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
            primary.set("x", 1)  # min-replicas-to-write 1 and no replica yet
        # a replica: its announced name is not the primary's
        procs.append(start("server", tmp_path / "r2", {**base, "REDIS_ANNOUNCE_HOST": "localhost",
                                                       "REDIS_PORT": str(p2)}))
        wait_port(p2, 10, procs[-1])
        conf = tmp_path / "r2" / "server.conf"
        assert f"replicaof 127.0.0.1 {p1}" in conf.read_text()
        assert oct(conf.stat().st_mode & 0o777) == "0o600"
        for p in procs:  # no password on any command line
            args = Path(f"/proc/{p.pid}/cmdline").read_bytes().decode(errors="replace")
            assert redis_password_for("replication") not in args
        wait_for(lambda: writable(primary), 15, "the replica to connect (replication user)")
        assert primary.execute_command("WAIT", 1, 2000) == 1
        assert admin(p2).get("probe") == b"1"
        # the Sentinel authenticates as the sentinel user and finds the replica
        procs.append(start("sentinel", tmp_path / "s1", {**base, "REDIS_ANNOUNCE_HOST":
                                                         "127.0.0.1", "SENTINEL_PORT": str(s1),
                                                         "SENTINEL_QUORUM": "1"}))
        wait_port(s1, 10, procs[-1])
        sentinel = redis.Redis(port=s1, socket_timeout=2)
        wait_for(lambda: int(sentinel.sentinel_master("cctv")["num-slaves"]) >= 1, 20,
                 "the Sentinel to see the replica")
        master = sentinel.sentinel_master("cctv")
        assert master["port"] == p1 and not master["is_sdown"], master
        # a restarted replica asks the Sentinel where the primary is
        procs[1].kill()
        procs[1].wait(5)
        procs[1] = start("server", tmp_path / "r2", {**base, "REDIS_PRIMARY_HOST": "nowhere",
                                                     "REDIS_ANNOUNCE_HOST": "localhost",
                                                     "REDIS_PORT": str(p2)})
        wait_port(p2, 10, procs[1])
        assert f"replicaof 127.0.0.1 {p1}" in conf.read_text()
    finally:
        for p in procs:
            p.kill()
            p.wait(5)
