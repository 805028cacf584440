"""A replicated Redis on loopback for tests and benchmarks: one primary, replicas and Sentinels,
all real redis-server processes with the production ACL (core/redis_acl.py), tuned to detect a
dead primary in about a second."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from cctv.core.redis_acl import durability_config, replica_config, sentinel_config

from support import admin_url, free_port, redis_acl_file, redis_password_for, service_env, wait_port

MASTER_NAME = "cctv"
#: a primary is "down" after 1 s without an answer; a failover attempt times out after 3 s
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


class Node:
    """One redis-server (or Sentinel) process with a config file of its own."""

    def __init__(self, name: str, folder: Path, lines: list[str], sentinel: bool = False) -> None:
        self.name, self.folder, self.sentinel = name, folder, sentinel
        self.port = free_port()
        self.conf = folder / f"{name}.conf"
        self.log = folder / f"{name}.log"
        self.lines = lines
        self.proc: subprocess.Popen | None = None

    def start(self) -> Node:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        for _ in range(20):
            self.conf.write_text("\n".join([f"port {self.port}", "bind 127.0.0.1",
                                            f"dir {self.folder}", f"logfile {self.log}",
                                            *self.lines]) + "\n")
            args = [exe, str(self.conf)] + (["--sentinel"] if self.sentinel else [])
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                wait_port(self.port, 10, self.proc)
                return self
            except RuntimeError:  # the port was taken meanwhile
                self.port = free_port()
        raise RuntimeError(f"{self.name} did not start; see {self.log}")

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """kill -9."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class ReplicatedRedis:
    """Primary + ``replicas`` replicas + ``sentinels`` Sentinels (quorum: a majority).

    ``min_replicas`` > 0 makes every server refuse writes with fewer connected replicas
    (``min-replicas-to-write``, lag bound ``max_lag_s``)."""

    def __init__(self, replicas: int = 2, sentinels: int = 3, *, min_replicas: int = 1,
                 max_lag_s: int = 2) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="cctv-redis-ha-"))
        acl = redis_acl_file(self.folder)
        common = [f"aclfile {acl}", "save \"\"", "appendonly no", "repl-diskless-sync yes",
                  "repl-diskless-sync-delay 0", "masteruser replication",
                  f"masterauth {redis_password_for('replication')}",
                  *(durability_config(min_replicas, max_lag_s) if min_replicas else [])]
        self.primary = Node("redis-0", self.folder, common).start()
        self.servers = [self.primary]
        for i in range(1, replicas + 1):
            self.servers.append(Node(f"redis-{i}", self.folder, [*common, *replica_config(
                "127.0.0.1", self.primary.port, redis_password_for("replication"))]).start())
        self.sentinels: list[Node] = []
        quorum = sentinels // 2 + 1
        for i in range(sentinels):
            self.sentinels.append(Node(f"sentinel-{i}", self.folder, sentinel_config(
                MASTER_NAME, "127.0.0.1", self.primary.port, quorum,
                redis_password_for("sentinel"), down_after_ms=DOWN_AFTER_MS,
                failover_timeout_ms=FAILOVER_TIMEOUT_MS), sentinel=True).start())
        self.wait_replicated(replicas)
        if self.sentinels:
            self.wait_sentinels_agree()

    # ---- clients ---------------------------------------------------------------------------
    def admin(self, node: Node | None = None) -> redis.Redis:
        """An admin client of ``node`` (the current primary by default)."""
        node = node or self.current_primary()
        return redis.Redis.from_url(admin_url(node.port), socket_timeout=2)

    def sentinel_list(self) -> str:
        """``CCTV_REDIS_SENTINELS`` for these Sentinels."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def env(self, service: str, **cctv: object) -> dict[str, str]:
        """The environment of a service process that finds the primary through the Sentinels
        and connects as its own ACL user."""
        env = service_env("redis://127.0.0.1:1/0", **cctv)
        env.update({"CCTV_REDIS_SENTINELS": self.sentinel_list(),
                    "CCTV_REDIS_MASTER_NAME": MASTER_NAME,
                    "CCTV_REDIS_USERNAME": service,
                    "CCTV_REDIS_PASSWORD": redis_password_for(service)})
        return env

    # ---- state -----------------------------------------------------------------------------
    def sentinel_primary_port(self, sentinel: Node) -> int | None:
        try:
            with redis.Redis(port=sentinel.port, socket_timeout=1) as c:
                addr = c.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        except redis.RedisError:
            return None
        return int(addr[1]) if addr else None

    def current_primary(self) -> Node:
        """The server the Sentinels name as primary (by majority; the first without any)."""
        if not self.sentinels:
            return self.primary
        ports = [self.sentinel_primary_port(s) for s in self.sentinels if s.alive()]
        for node in self.servers:
            if ports.count(node.port) > len(self.sentinels) // 2:
                return node
        raise AssertionError(f"the Sentinels do not agree on a primary: {ports}")

    def role(self, node: Node) -> str:
        try:
            with self.admin(node) as c:
                return c.execute_command("ROLE")[0].decode()
        except redis.RedisError:
            return "down"

    def connected_replicas(self, node: Node) -> int:
        with self.admin(node) as c:
            return int(c.info("replication").get("connected_slaves", 0))

    def wait_replicated(self, n: int, timeout_s: float = 20.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            try:
                if self.connected_replicas(self.current_primary_or_first()) >= n:
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"fewer than {n} replicas connected after {timeout_s}s")

    def current_primary_or_first(self) -> Node:
        try:
            return self.current_primary()
        except AssertionError:
            return self.primary

    def wait_sentinels_agree(self, timeout_s: float = 20.0, other_than: Node | None = None
                             ) -> Node:
        """Wait until a majority of Sentinels name one live primary (not ``other_than``) that
        says it is a primary; return it."""
        end = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < end:
            try:
                node = self.current_primary()
                if node is not other_than and node.alive() and self.role(node) == "master":
                    # every Sentinel also knows the other Sentinels (needed for a failover)
                    return node
            except AssertionError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise AssertionError(f"no agreed primary after {timeout_s}s ({last}); logs in "
                             f"{self.folder}")

    def wait_sentinels_know_each_other(self, timeout_s: float = 20.0) -> None:
        """Sentinels discover each other through hello messages; a failover needs them to."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            ok = True
            for s in self.sentinels:
                try:
                    with redis.Redis(port=s.port, socket_timeout=1) as c:
                        info = c.sentinel_master(MASTER_NAME)
                    if int(info["num-other-sentinels"]) < len(self.sentinels) - 1:
                        ok = False
                except redis.RedisError:
                    ok = False
            if ok:
                return
            time.sleep(0.1)
        raise AssertionError("the Sentinels did not discover each other")

    def close(self) -> None:
        for node in [*self.sentinels, *self.servers]:
            node.signal(signal.SIGCONT)
            node.kill()
        if not os.environ.get("CCTV_KEEP_TMP"):
            shutil.rmtree(self.folder, ignore_errors=True)
