"""What the dashboard shows of Redis itself: the primary, its replicas and the Sentinels, and
the history of primary changes (a Sentinel failover, a restart) beside the inference take-overs.

* :func:`replication` reads the primary's ``INFO`` (replication section): its replicas, their
  state and lag, and the replicas that count for ``min-replicas-to-write``.
* :class:`SentinelWatch` asks every Sentinel (``SENTINEL MASTER <name>``) what it sees: the
  primary's address, the flags (``s_down``, ``o_down``), how many other Sentinels it knows, the
  quorum. A Sentinel that does not answer is shown as such.
* :func:`record_primary` notes the primary's ``run_id`` in ``cctv:redis:primary``; when it
  changed, one entry ``event=redis_primary`` goes to ``cctv:failovers`` (the atomic check makes
  several web processes record one change once). ``reason`` is ``failover`` when the address
  changed too, else ``restart``.
"""

from __future__ import annotations

import logging

import redis

from cctv.core import keys
from cctv.core.redisconn import RedisTarget
from cctv.core.scripts import Scripts

log = logging.getLogger("cctv.redis_topology")


def _text(v: object) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _int(v: object) -> int | None:
    try:
        return int(_text(v))
    except (TypeError, ValueError):
        return None


def replication(info: dict) -> dict:
    """The primary's replication state from its ``INFO`` (as redis-py parses it)."""
    replicas = []
    for i in range(_int(info.get("connected_slaves")) or 0):
        raw = info.get(f"slave{i}")
        if isinstance(raw, dict):
            replicas.append({"addr": f"{raw.get('ip')}:{raw.get('port')}",
                             "state": _text(raw.get("state", "?")),
                             "offset": _int(raw.get("offset")), "lag_s": _int(raw.get("lag"))})
    out = {"role": _text(info.get("role", "?")), "replicas": replicas,
           "repl_offset": _int(info.get("master_repl_offset"))}
    good = info.get("min_slaves_good_slaves")
    if good is not None:
        out["good_replicas"] = _int(good)
    return out


def primary_address(client: redis.Redis) -> str:
    """``host:port`` of the server ``client`` writes to (through Sentinel: the primary the
    Sentinels name now)."""
    pool = client.connection_pool
    getter = getattr(pool, "get_master_address", None)
    if getter is not None:
        host, port = getter()
        return f"{host}:{port}"
    kw = pool.connection_kwargs
    if kw.get("path"):
        return f"unix:{kw['path']}"
    return f"{kw.get('host', '?')}:{kw.get('port', '?')}"


def record_primary(client: redis.Redis, scripts: Scripts, run_id: str, addr: str,
                   now_ms: int) -> bool:
    """Note the primary (``run_id`` from its INFO); True when a change was recorded."""
    return bool(scripts.record_redis_primary(
        keys=[keys.REDIS_PRIMARY, keys.FAILOVERS], args=[run_id, addr, now_ms]))


def redis_history(entries: list[tuple[bytes, dict]], limit: int = 20) -> list[dict]:
    """The ``redis_primary`` entries of ``cctv:failovers`` (newest first, as given)."""
    out = []
    for eid, f in entries:
        fields = {_text(k): _text(v) for k, v in f.items()}
        if fields.get("event") != "redis_primary":
            continue
        out.append({"id": _text(eid), "time_ms": _int(fields.get("time_ms")),
                    "old": fields.get("old") or None, "new": fields.get("new", ""),
                    "reason": fields.get("reason", "")})
        if len(out) >= limit:
            break
    return out


class SentinelWatch:
    """Asks each Sentinel of ``target`` what it sees (one short-timeout client each, kept)."""

    def __init__(self, target: RedisTarget, timeout_s: float = 0.5) -> None:
        self.target = target
        self.clients = [redis.Redis(host=h, port=p, password=target.sentinel_password,
                                    socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
                        for h, p in target.sentinels]

    def state(self) -> list[dict]:
        """One dict per Sentinel: its address, ``ok``, and what it reports of the primary."""
        out = []
        for (host, port), client in zip(self.target.sentinels, self.clients, strict=True):
            entry: dict = {"addr": f"{host}:{port}", "ok": False}
            try:
                raw = client.execute_command("SENTINEL", "MASTER", self.target.master_name)
                fields = dict(zip(map(_text, raw[::2]), map(_text, raw[1::2]), strict=True)) \
                    if isinstance(raw, list) else {_text(k): _text(v) for k, v in raw.items()}
                flags = fields.get("flags", "")
                entry.update(ok=True, primary=f"{fields.get('ip')}:{fields.get('port')}",
                             flags=flags, down="s_down" in flags or "o_down" in flags,
                             other_sentinels=_int(fields.get("num-other-sentinels")),
                             replicas=_int(fields.get("num-slaves")),
                             quorum=_int(fields.get("quorum")))
            except (redis.RedisError, OSError, ValueError) as exc:
                entry["error"] = str(exc)[:120]
            out.append(entry)
        return out
