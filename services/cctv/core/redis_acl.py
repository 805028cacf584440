"""Redis ACL users, one per service, with the narrowest commands and keys that work; and the
configuration lines a replicated Redis (primary, replicas, Sentinels) needs for them.

The rules are here once; ``cctv redis-acl`` writes them as an ACL file (``--aclfile``) for the
stack, ``cctv local`` and the test suite's redis-server, so every service runs everywhere with
the permissions it has in production. Key patterns come from :mod:`cctv.core.keys`.

Users (the ``default`` user is off: a client that does not authenticate can do nothing; see
:func:`acl_lines` for why it keeps every permission even so):

* ``ingest``, ``inference``, ``web``, ``events``, ``capture``: the services
  (``CCTV_REDIS_USERNAME``);
* ``sentinel``: what Redis Sentinel needs on the monitored servers (Redis' Sentinel docs,
  "Redis Access Control List authentication");
* ``replication``: what a replica needs on its primary (``PSYNC``, ``REPLCONF``, ``PING``);
* ``admin``: everything, for the CLI's tools (``cctv status``, set-up) and tests.

Selectors ``(...)`` (Redis 7) grant a command on some keys only: the events service may ack
results (``XACK`` writes the consumer group) but not append to a results stream.

Passwords are stored as SHA-256 (``#<hex>``): the ACL file holds no clear password.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

from cctv.core import keys

P = keys.PREFIX

#: every connection: handshake, health checks, scripts, WAIT (replica acknowledgement)
_CONNECTION = ("+ping +hello +client|setname +client|id +info +time +wait "
               "+evalsha +eval +script|load +script|exists +multi +exec +discard")

def _heartbeat(service: str) -> str:
    """The service's own heartbeat hash, and the index every heartbeat adds itself to."""
    return f"(~{P}:hb:{service}:* ~{keys.HEARTBEATS} +hset +pexpire +del +zadd)"


#: commands the ingest script runs on a camera's frame keys (core/scripts.py INGEST)
_INGEST_SCRIPT = ("+get +set +hexists +hincrby +hmget +hset +pexpire +exists +del +xgroup|create "
                  "+sadd +xlen +xinfo|groups +xrange +xpending +xtrim +lindex +lpop +xack +xadd "
                  "+rpush")

#: the fenced inference scripts, the lease, take-over and tracker state (core/scripts.py,
#: inference/lease.py, inference/worker.py, inference/tracking.py)
_INFERENCE_CMDS = ("+get +set +incr +hmget +hset +hsetnx +hdel +hgetall +pexpire +pttl +del "
                   "+publish +subscribe +unsubscribe +xack +xadd +hincrby +xgroup|create "
                   "+xgroup|setid +xinfo|groups +lrange +xreadgroup +xautoclaim +xclaim "
                   "+xpending +xrange +xrevrange +xlen +smembers")

#: what each service user may do (besides authenticating); see the module docstring
SERVICE_RULES: dict[str, str] = {
    "ingest": " ".join([
        f"resetchannels {_CONNECTION}",
        f"~{P}:frames:* ~{P}:frameidx:* ~{P}:stats:* ~{P}:seen:* ~{P}:rl:* ~{P}:drops:* "
        f"~{keys.CAMERAS_ACTIVE} ~{keys.CAMERAS_REMOVED} ~{P}:capture:floor:* "
        f"{_INGEST_SCRIPT}",
        f"(~{keys.INGEST_RESPONSES} ~{keys.INGEST_RESPONSES}:* +hincrby +expire)",
        # the camera registry: read, seeded from CCTV_CAMERAS, a rotated token confirmed
        f"(~{keys.CAMERAS_REGISTRY} ~{keys.CAMERAS_REMOVED} ~{keys.CAMERAS_VERSION} "
        "+get +incrby +hget +hgetall +hexists +hsetnx +hset +hdel +watch +unwatch)",
        _heartbeat("ingest"),
    ]),
    "inference": " ".join([
        f"resetchannels &{keys.LEASE_RELEASED_CHANNEL} {_CONNECTION}",
        # every shard's lease, holder, successor, epoch and last result (keys.shard_keys)
        f"~{keys.LEASE_INFERENCE} ~{keys.LEASE_INFERENCE}:* ~{keys.EPOCH_INFERENCE} "
        f"~{keys.EPOCH_INFERENCE}:* ~{keys.LEADER_LAST_RESULT} ~{keys.LEADER_LAST_RESULT}:* "
        f"~{keys.INFERENCE_SHARDS} ~{keys.INFERENCE_CAMERA_SHARDS} ~{keys.FAILOVERS} "
        f"~{P}:frames:* ~{P}:frameidx:* "
        f"~{P}:det:* ~{P}:stats:* ~{P}:drops:* ~{P}:track:* {_INFERENCE_CMDS}",
        f"(%R~{keys.CAMERAS_ACTIVE} +smembers)",
        # the camera registry, read only: each camera's detection settings
        f"(%R~{keys.CAMERAS_REGISTRY} %R~{keys.CAMERAS_REMOVED} %R~{keys.CAMERAS_VERSION} "
        "+get +hgetall +hget)",
        # capacity-aware leadership: the leader reads the standbys' heartbeats
        f"(%R~{P}:hb:inference:* %R~{keys.HEARTBEATS} +hgetall +zrangebyscore)",
        _heartbeat("inference"),
    ]),
    # web reads everything it shows; it writes only its sessions, its heartbeat, the trim of
    # the heartbeat index, and the temporary key of an events query
    "web": " ".join([
        f"resetchannels %R~{P}:* +@read -@dangerous -keys -scan {_CONNECTION}",
        f"(~{P}:web:session:* +set +get +del +expire)",
        f"(~{keys.HEARTBEATS} +zremrangebyscore)",
        f"(~{keys.EVENTS_INDEX}:tmp:* %R~{keys.EVENTS_INDEX}* +zinterstore +zrevrangebyscore "
        "+del)",
        # the admin API (CCTV_ADMIN_TOKEN): the camera registry, and a removed camera's keys
        # set to expire (core/registry.py camera_keys)
        f"(~{keys.CAMERAS_REGISTRY} ~{keys.CAMERAS_REMOVED} ~{keys.CAMERAS_VERSION} "
        "+hget +hgetall +hexists +hset +hsetnx +hdel +incrby +watch +unwatch)",
        f"(~{keys.CAMERAS_ACTIVE} +srem +sismember)",
        # the dashboard notes the Redis primary and records a change of it (redis_topology.py)
        f"(~{keys.REDIS_PRIMARY} ~{keys.FAILOVERS} +evalsha +eval +hmget +hset +xadd)",
        f"(~{P}:frames:* ~{P}:frameidx:* ~{P}:det:* ~{P}:drops:* ~{P}:stats:* ~{P}:rl:* "
        f"~{P}:track:* ~{P}:events:state:* ~{P}:events:lines:* ~{P}:capture:* "
        "+expire +persist)",
        _heartbeat("web"),
    ]),
    "events": " ".join([
        f"resetchannels {_CONNECTION}",
        f"~{keys.EVENTS} ~{keys.EVENTS}:* ~{P}:event:* "
        "+get +set +del +exists +hget +hset +hmget +hgetall +hincrby +zadd +zrem +zrange "
        "+zrangebyscore +zrevrangebyscore +zcard +zinterstore +sadd +srem +smembers +sismember "
        "+xadd +xrange +xrevrange +xlen +xreadgroup +xack +xgroup|create +xgroup|setid "
        "+xautoclaim +xclaim +xpending +xinfo|groups +xinfo|stream +expire +pexpire",
        f"(~{P}:det:* +xreadgroup +xack +xgroup|create +xinfo|groups +xpending +xrange "
        "+xrevrange)",
        f"(%R~{P}:frames:* %R~{P}:track:* +xrange +xrevrange +get)",
        f"(%R~{keys.CAMERAS_ACTIVE} +smembers +sismember)",
        _heartbeat("events"),
    ]),
    # capture: reads the registry and the heartbeats (who else captures), writes only its
    # cameras' leases, epochs and seq floors (core/scripts.py CAPTURE_*) and its heartbeat
    "capture": " ".join([
        f"resetchannels {_CONNECTION}",
        f"~{P}:capture:lease:* ~{P}:capture:epoch:* ~{P}:capture:floor:* "
        "+get +mget +set +incr +pexpire +del",
        f"(%R~{keys.CAMERAS_REGISTRY} %R~{keys.CAMERAS_REMOVED} %R~{keys.CAMERAS_VERSION} "
        "+get +hgetall +hexists)",
        f"(%R~{keys.HEARTBEATS} +zrangebyscore)",
        _heartbeat("capture"),
    ]),
}

#: what Redis Sentinel needs on every monitored server (Redis' Sentinel documentation)
SENTINEL_RULES = ("resetchannels &__sentinel__:hello -@all +multi +slaveof +replicaof +ping "
                  "+exec +subscribe +config|rewrite +role +publish +info +client|setname "
                  "+client|kill +script|kill")
#: what a replica needs on its primary
REPLICATION_RULES = "resetchannels -@all +psync +replconf +ping"
#: the CLI's tools and the tests' set-up
ADMIN_RULES = "~* &* +@all"

#: every user the ACL file defines, and its rules
ALL_RULES: dict[str, str] = {**SERVICE_RULES, "sentinel": SENTINEL_RULES,
                             "replication": REPLICATION_RULES, "admin": ADMIN_RULES}

USERS: tuple[str, ...] = tuple(ALL_RULES)

_USER_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def password_hash(password: str) -> str:
    """The ``#<sha256 hex>`` form of ``password`` an ACL file takes."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def acl_lines(passwords: Mapping[str, str]) -> list[str]:
    """ACL file lines: ``default`` off, then each user of ``passwords`` (user -> password) with
    its rules. Raises ValueError for an unknown user or an empty password."""
    # off: no client can log in as default. Its permissions are still every command on every
    # key because Redis replays the append-only file as the default user and re-checks those
    # permissions at each EXEC: without them every MULTI/EXEC in the file (every script's
    # writes) would be refused on restart, and those frames and results silently lost
    lines = ["user default off resetchannels ~* &* +@all"]
    for user, password in passwords.items():
        if user not in ALL_RULES or not _USER_RE.fullmatch(user):
            raise ValueError(f"unknown Redis user {user!r}; the users are {', '.join(USERS)}")
        if not password or any(c.isspace() for c in password):
            raise ValueError(f"the password of Redis user {user!r} is empty or has whitespace")
        lines.append(f"user {user} reset on {password_hash(password)} {ALL_RULES[user]}")
    return lines


def write_acl_file(path: Path, passwords: Mapping[str, str]) -> Path:
    """Write the ACL file for ``passwords`` to ``path`` (mode 0600)."""
    path.write_text("\n".join(acl_lines(passwords)) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def read_passwords(folder: Path, users: tuple[str, ...] = USERS) -> dict[str, str]:
    """Passwords from ``folder/<user>`` files (one password each, surrounding whitespace
    stripped), for every user in ``users`` whose file exists."""
    out = {}
    for user in users:
        f = folder / user
        if f.is_file():
            out[user] = f.read_text(encoding="utf-8").strip()
    return out


def replica_config(primary_host: str, primary_port: int, replication_password: str) -> list[str]:
    """redis.conf lines of a replica of ``primary_host:primary_port`` (authenticating as the
    ``replication`` user)."""
    return [f"replicaof {primary_host} {primary_port}", "masteruser replication",
            f"masterauth {replication_password}"]


def durability_config(min_replicas: int = 1, max_lag_s: int = 2) -> list[str]:
    """redis.conf lines that make a primary refuse writes while fewer than ``min_replicas``
    replicas are connected with a lag below ``max_lag_s`` (an isolated primary acknowledges
    nothing the promoted replica would lack). Every server gets them: a replica promoted later
    must behave the same."""
    return [f"min-replicas-to-write {min_replicas}", f"min-replicas-max-lag {max_lag_s}"]


def sentinel_config(master_name: str, primary_host: str, primary_port: int, quorum: int,
                    sentinel_password: str, *, down_after_ms: int = 5000,
                    failover_timeout_ms: int = 60000) -> list[str]:
    """sentinel.conf lines monitoring ``master_name`` (authenticating as the ``sentinel``
    user on every server). Sentinel rewrites its file: give it a writable copy."""
    return [f"sentinel monitor {master_name} {primary_host} {primary_port} {quorum}",
            f"sentinel auth-user {master_name} sentinel",
            f"sentinel auth-pass {master_name} {sentinel_password}",
            f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
            f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
            f"sentinel parallel-syncs {master_name} 1"]
