"""`cctv swarmwatch` is the one holder of the Docker socket: it publishes nodes, services and
tasks into Redis, and the web dashboard shows that snapshot (web has no socket setting).

Docker itself is external: a real HTTP server on a unix socket answers the three Docker Engine
API endpoints swarmwatch reads, with objects shaped as Docker returns them. Redis, swarmwatch
and web are real processes."""

from __future__ import annotations

import json
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests

from cctv.core import keys
from cctv.core.entries import EntryError
from cctv.core.swarmsnap import decode_snapshot, encode_snapshot
from cctv.settings import Settings, SettingsError, load_settings

from support import (
    VIEWER_PASSWORD,
    VIEWER_USER,
    Service,
    service_env,
    start_listening,
    wait_for,
)

NODES = [
    {"ID": "m1xxxxxxxxxxxx", "Description": {"Hostname": "mgr-1", "Engine": {
        "EngineVersion": "28.0.1"}}, "Spec": {"Role": "manager", "Availability": "active",
                                             "Labels": {}},
     "Status": {"State": "ready", "Addr": "10.0.0.1"},
     "ManagerStatus": {"Leader": True, "Reachability": "reachable"}},
    {"ID": "w1xxxxxxxxxxxx", "Description": {"Hostname": "worker-7"},
     "Spec": {"Role": "worker", "Availability": "active", "Labels": {"cctv.inference": "true"}},
     "Status": {"State": "ready", "Addr": "10.0.0.2"}},
]
SERVICES = [{"ID": "s-inf", "Spec": {"Name": "cctv_inference",
                                     "Mode": {"Replicated": {"Replicas": 2}},
                                     "TaskTemplate": {"ContainerSpec": {"Image": "inf:1"}}}}]
TASKS = [{"ServiceID": "s-inf", "NodeID": "w1xxxxxxxxxxxx", "Slot": 1,
          "DesiredState": "running", "Status": {"State": "running"}}]


class FakeDocker(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The Docker Engine API's GET /nodes, /services, /tasks on a unix socket; records paths."""

    daemon_threads = True

    def __init__(self, path: Path, manager: bool = True) -> None:
        self.paths: list[tuple[str, str]] = []
        self.manager = manager
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.paths.append(("GET", self.path))
                resource = self.path.split("?")[0].rsplit("/", 1)[-1]
                if not server.manager:
                    self._json(503, {"message": "This node is not a swarm manager."})
                    return
                data = {"nodes": NODES, "services": SERVICES, "tasks": TASKS}.get(resource)
                self._json(200 if data is not None else 404, data or {"message": "no"})

            def do_POST(self) -> None:  # noqa: N802 - never sent by swarmwatch
                server.paths.append(("POST", self.path))
                self._json(405, {"message": "read-only fake"})

            def _json(self, status: int, obj: object) -> None:
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_a: object) -> None:
                pass

            def address_string(self) -> str:
                return "unix"

        super().__init__(str(path), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def _cluster(url: str) -> dict:
    r = requests.get(url + "/api/v1/cluster", auth=(VIEWER_USER, VIEWER_PASSWORD), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_web_has_no_docker_socket_setting() -> None:
    assert not [f for f in Settings.__dataclass_fields__ if "docker" in f]
    with pytest.raises(SettingsError, match="CCTV_DOCKER_SOCKET"):
        load_settings({"CCTV_DOCKER_SOCKET": "/var/run/docker.sock"})


def test_dashboard_shows_the_snapshot_swarmwatch_publishes(redis_server, tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"
    docker = FakeDocker(sock)
    rdb = redis_server.client()
    rdb.delete(keys.SWARM_SNAPSHOT)
    env = service_env(redis_server.url, swarmwatch_socket=sock, swarmwatch_interval_s=0.2)
    watch = Service(["swarmwatch"], env, tmp_path, "swarmwatch")
    web = None
    try:
        wait_for(lambda: rdb.get(keys.SWARM_SNAPSHOT) is not None, 20, "a snapshot",
                 [watch.log_path])
        snap = decode_snapshot(rdb.get(keys.SWARM_SNAPSHOT))
        assert snap.ok and [n["name"] for n in snap.nodes] == ["mgr-1", "worker-7"]
        assert 0 < rdb.ttl(keys.SWARM_SNAPSHOT) <= 2, "the snapshot expires with its publisher"
        port, web = start_listening(lambda p: Service(
            ["web"], service_env(redis_server.url, web_bind=f"127.0.0.1:{p}"), tmp_path,
            f"web-{p}"))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _cluster(url)["nodes_source"] == "docker", 20, "docker source")
        cluster = _cluster(url)
        assert [n["name"] for n in cluster["nodes"]][:2] == ["mgr-1", "worker-7"]
        inf = next(s for s in cluster["services"] if s["name"] == "cctv_inference")
        assert (inf["desired"], inf["running"]) == (2, 1)
        assert inf["tasks"][0]["node"] == "worker-7"
        assert cluster["docker"]["available"] is True
        # swarmwatch only reads: GETs of the three resources, nothing else
        assert {m for m, _ in docker.paths} == {"GET"}
        assert {p.split("?")[0].rsplit("/", 1)[-1] for _, p in docker.paths} == {
            "nodes", "services", "tasks"}
        assert Service(["swarmwatch", "--check"], env, tmp_path, "check").proc.wait(30) == 0

        # Docker answers "not a manager": an ok=false snapshot, the dashboard says why
        docker.manager = False
        wait_for(lambda: not decode_snapshot(rdb.get(keys.SWARM_SNAPSHOT)).ok, 10, "ok=false")
        wait_for(lambda: _cluster(url)["nodes_source"] == "heartbeats", 20, "fallback")
        assert "not_manager" in _cluster(url)["docker"]["error"]

        # swarmwatch stops: the key expires and web falls back to heartbeats by itself
        watch.stop()
        assert "not_manager" in watch.log()
        wait_for(lambda: rdb.get(keys.SWARM_SNAPSHOT) is None, 10, "the snapshot to expire")
        assert Service(["swarmwatch", "--check"], env, tmp_path, "check2").proc.wait(30) == 1
        # a bad value read back is counted and ignored, never a crash
        before = _bad_snapshots(url)
        for bad in (b"not json", b'{"v":1,"time":1,"ok":true,"node":"x","error":"",'
                    b'"nodes":[{"name":1}],"services":[]}', b"[" * 100_000):
            rdb.set(keys.SWARM_SNAPSHOT, bad)
            time.sleep(1.5)
            assert _cluster(url)["nodes_source"] == "heartbeats"
        wait_for(lambda: _bad_snapshots(url) >= before + 3, 10, "bad snapshots counted")
        assert web.proc.poll() is None
    finally:
        watch.stop()
        if web is not None:
            web.stop()
        docker.shutdown()
        rdb.delete(keys.SWARM_SNAPSHOT)


def _bad_snapshots(url: str) -> float:
    text = requests.get(url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("cctv_web_bad_swarm_snapshots_total "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.parametrize("raw", [
    None, b"", b"{}", b"[]", b'{"v":2}', b'{"v":1,"time":"x","ok":true}',
    b'{"v":1,"time":1,"ok":1,"node":"x","error":"","nodes":[],"services":[]}',
    b'{"v":1,"time":1e400,"ok":true,"node":"x","error":"","nodes":[],"services":[]}',
    encode_snapshot(time=1, node="x", ok=True, nodes=[{"name": "x" * 600}]),
    encode_snapshot(time=1, node="x", ok=True, services=[{"name": "s", "mode": "global",
                    "image": "", "desired": -1, "running": 0, "tasks": []}]),
    b"\xff\xfe",
])
def test_bad_snapshots_are_refused(raw) -> None:
    with pytest.raises(EntryError):
        decode_snapshot(raw)
