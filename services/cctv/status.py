"""``cctv status``: the inference leader and epoch (of each shard, with its cameras), the
replicas (with their device and time per frame), the capture instances and the cameras each
pulls, and recent failovers (inference take-overs, shard moves and changes of the Redis
primary)."""

from __future__ import annotations

import json
import time

from cctv.core import keys
from cctv.core.heartbeat import beats_of, read_beats
from cctv.core.redisconn import REDIS_DOWN_ERRORS, connect_settings
from cctv.core.shardstate import read_shards, warm_standbys
from cctv.settings import Settings


def _beats(client, service: str) -> list[dict]:
    """The heartbeats of ``service``'s instances, with their age; through the heartbeats
    index (every beat ZADDs its key), or a SCAN for instances older than the index."""
    return read_beats(client, service, 120) or beats_of(
        client, list(client.scan_iter(match=keys.heartbeat_pattern(service), count=1000)),
        time.time())


def cluster_status(client) -> dict:
    """Leader, epoch, replicas and capture instances (from heartbeats) and the last
    failovers, as a dict."""
    leases = read_shards(client)
    shards = [{"shard": sh.shard, "leader": sh.leader, "epoch": sh.epoch,
               "lease_ms_left": sh.lease_ms_left}
              | ({"cameras": list(sh.cameras)} if sh.cameras is not None else {})
              for sh in leases]
    replicas = _beats(client, "inference")
    capture = _beats(client, "capture")
    failovers = []
    for eid, fields in client.xrevrange(keys.FAILOVERS, count=10):
        entry = {k.decode(): v.decode() for k, v in fields.items()}
        entry["id"] = eid.decode()
        failovers.append(entry)
    first = leases[0]
    return {"leader": first.leader, "epoch": first.epoch, "lease_ms_left": first.lease_ms_left,
            "shards": shards,
            "replicas": replicas, "capture": capture, "failovers": failovers}


def print_status(settings: Settings, as_json: bool = False) -> int:
    """Print the cluster status; exit code 0 with a leader for every shard, 1 without, 2 if
    Redis is down."""
    try:
        st = cluster_status(connect_settings(settings, name="cctv-status"))
    except REDIS_DOWN_ERRORS as exc:
        print(f"cctv status: cannot reach redis at {settings.redis_url}: {exc}")
        return 2
    led = all(sh["leader"] for sh in st["shards"])
    if as_json:
        print(json.dumps(st, indent=2))
        return 0 if led else 1
    if len(st["shards"]) > 1:
        print(f"shards:   {sum(1 for sh in st['shards'] if sh['leader'])} of "
              f"{len(st['shards'])} led")
        for sh in st["shards"]:
            print(f"  shard {sh['shard']:<3} {sh['leader'] or 'NO LEADER':24} "
                  f"epoch={sh['epoch']:<5} lease {sh['lease_ms_left']} ms left  "
                  f"cameras={','.join(sh['cameras']) or '-'}")
    else:
        print(f"leader:   {st['leader'] or 'NONE (no replica holds the lease)'}")
        print(f"epoch:    {st['epoch']}  (lease {st['lease_ms_left']} ms left)")
    print("replicas:")
    for r in st["replicas"]:
        print(f"  {r.get('id', '?'):24} {r.get('role', '?'):8} node={r.get('node', '?'):12} "
              f"epoch={r.get('epoch', '?'):>4} shards={r.get('shards') or '-'} "
              f"fps={r.get('fps', '?'):>6} "
              f"lag={r.get('lag_ms', '?')}ms {r.get('device') or '?'} "
              f"{r.get('ms_per_frame', '?')}ms/frame beat {r['age_s']}s ago")
    if not st["replicas"]:
        print("  none (no heartbeats)")
    if not warm_standbys(st["replicas"], len(st["shards"]), st["leader"]):
        print("WARNING: no warm standby")
    if st["capture"]:
        print("capture instances:")
        for c in st["capture"]:
            print(f"  {c.get('id', '?'):24} node={c.get('node', '?'):12} "
                  f"cameras={c.get('cameras') or '-'} beat {c['age_s']}s ago")
    print("recent failovers:")
    for f in st["failovers"]:
        when = time.strftime("%H:%M:%S", time.localtime(int(f.get("time_ms", 0)) / 1000))
        gap = f" gap={f['gap_ms']}ms" if "gap_ms" in f else ""
        epoch = f"epoch={f.get('epoch')} " if "epoch" in f else ""
        if len(st["shards"]) > 1 and "shard" in f:
            epoch = f"shard={f['shard']} {epoch}"
        print(f"  {when} {f.get('event', ''):13} {epoch}"
              f"{f.get('old') or '-'} -> {f.get('new')} {f.get('reason', '')}{gap}")
    return 0 if led else 1
