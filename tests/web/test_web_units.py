"""Fast checks of the web parts that need no running system: settings of viewer accounts,
`cctv hash-password`, the OpenAPI document, Docker API summaries, failover pairing, alerts,
result typing, event-stream framing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from werkzeug.security import check_password_hash, generate_password_hash

from cctv.core.entries import EntryError, encode_result
from cctv.settings import SettingsError, load_settings
from cctv.swarmwatch.docker_api import summarize_swarm
from cctv.web.auth import _safe_next
from cctv.web.cluster import alerts, failover_history
from cctv.web.results import result_json
from cctv.web.sse import format_event

from support import ROOT

SPEC = ROOT / "services" / "cctv" / "web" / "openapi.yaml"


def test_viewer_accounts_must_be_hashed() -> None:
    h = generate_password_hash("secret-pass", "pbkdf2:sha256:1000")
    s = load_settings({"CCTV_VIEWERS": f"alice:{h}\n# comment\n\nbob:{h}"})
    assert set(s.viewer_hashes) == {"alice", "bob"}
    with pytest.raises(SettingsError, match="CCTV_VIEWERS.*not a hash.*cctv hash-password"):
        load_settings({"CCTV_VIEWERS": "alice:plainpassword"})
    with pytest.raises(SettingsError, match="CCTV_VIEWERS"):
        load_settings({"CCTV_VIEWERS": f"bad name:{h}"})
    with pytest.raises(SettingsError, match="CCTV_WEB_SECRET_KEY is too short") as err:
        load_settings({"CCTV_WEB_SECRET_KEY": "short"})
    assert "short" not in str(err.value).replace("too short", ""), "a secret must not be echoed"


def test_viewer_accounts_from_a_secret_file(tmp_path: Path) -> None:
    h = generate_password_hash("secret-pass", "pbkdf2:sha256:1000")
    (tmp_path / "viewers").write_text(f"admin:{h}\n")
    s = load_settings({"CCTV_VIEWERS_FILE": str(tmp_path / "viewers")})
    assert check_password_hash(s.viewer_hashes["admin"], "secret-pass")


def test_hash_password_command() -> None:
    run = lambda *a, inp: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "cctv", "hash-password", *a], input=inp, capture_output=True,
        text=True, timeout=60, env={"PATH": "/usr/bin:/bin",
                                    "PYTHONPATH": str(ROOT / "services")})
    out = run("--user", "ops", "--stdin", inp="correct horse\n")
    assert out.returncode == 0, out.stderr
    user, _, pw_hash = out.stdout.strip().partition(":")
    assert user == "ops" and pw_hash.startswith("scrypt:")
    assert check_password_hash(pw_hash, "correct horse")
    assert load_settings({"CCTV_VIEWERS": out.stdout}).viewer_hashes["ops"] == pw_hash
    assert run("--stdin", inp="short\n").returncode == 2
    assert run("--user", "bad name", "--stdin", inp="long enough\n").returncode == 2


def test_web_refuses_to_start_without_accounts(redis_server) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "services"),
           "CCTV_REDIS_URL": redis_server.url, "CCTV_LOG_JSON": "false"}
    out = subprocess.run([sys.executable, "-m", "cctv", "web"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert "CCTV_VIEWERS is empty" in out.stderr and "Traceback" not in out.stderr


def test_openapi_document_validates() -> None:
    from openapi_spec_validator import validate

    spec = yaml.safe_load(SPEC.read_text())
    validate(spec)
    docs_copy = ROOT / "docs" / "api" / "openapi.yaml"
    assert docs_copy.resolve().read_text() == SPEC.read_text(), "docs/api links the served file"


def test_openapi_documents_every_api_route() -> None:
    """Every route of the whole web app under /api/ (blueprints of other packages included:
    the events API), /video/ and the ops routes is in the OpenAPI file with its methods, and
    every documented operation exists."""
    from cctv.web.app import create_app

    s = load_settings({"CCTV_VIEWERS": "u:" + generate_password_hash("x" * 8,
                                                                    "pbkdf2:sha256:1000"),
                       "CCTV_REDIS_URL": "redis://127.0.0.1:1/0"})
    app = create_app(s, background=False)  # as `cctv web`: with the events blueprint
    spec = yaml.safe_load(SPEC.read_text())
    documented = {(re.sub(r"\{(\w+)\}", r"<\1>", path), method.upper())
                  for path, item in spec["paths"].items() for method in item
                  if method in ("get", "put", "post", "delete", "patch")}
    routes = {(re.sub(r"<(?:[^<>:]+:)?(\w+)>", r"<\1>", rule.rule), method)
              for rule in app.url_map.iter_rules()
              for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
              if rule.rule.startswith(("/api/", "/video/", "/healthz", "/readyz", "/metrics"))}
    assert ("/api/v1/events", "GET") in routes, "the events blueprint is registered"
    missing, stale = sorted(routes - documented), sorted(documented - routes)
    assert not missing, f"routes missing from openapi.yaml: {missing}"
    assert not stale, f"openapi.yaml documents routes the app lacks: {stale}"


def test_safe_redirects_after_login() -> None:
    assert _safe_next("/cameras/cam1?x=1") == "/cameras/cam1?x=1"
    for bad in ("https://evil.example/", "//evil.example", "/\\evil.example", "", None,
                "javascript:alert(1)"):
        assert _safe_next(bad) == "/"


# Shapes as the Docker Engine API returns them (GET /nodes, /services, /tasks), trimmed.
NODES = [
    {"ID": "m1xxxxxxxxxxxx", "Description": {"Hostname": "manager", "Engine": {
        "EngineVersion": "20.10.24"}}, "Spec": {"Role": "manager", "Availability": "active",
                                                "Labels": {}},
     "Status": {"State": "ready", "Addr": "10.0.0.1"},
     "ManagerStatus": {"Leader": True, "Reachability": "reachable"}},
    {"ID": "w1xxxxxxxxxxxx", "Description": {"Hostname": "worker1"},
     "Spec": {"Role": "worker", "Availability": "active", "Labels": {"cctv.inference": "true"}},
     "Status": {"State": "down", "Addr": "10.0.0.2"}},
]
SERVICES = [
    {"ID": "s-inf", "Spec": {"Name": "cctv_inference", "Mode": {"Replicated": {"Replicas": 2}},
                             "TaskTemplate": {"ContainerSpec": {"Image": "app:1@sha256:ab"}}}},
    {"ID": "s-ing", "Spec": {"Name": "cctv_ingest", "Mode": {"Global": {}}}},
]
TASKS = [
    {"ServiceID": "s-inf", "NodeID": "m1xxxxxxxxxxxx", "Slot": 1, "DesiredState": "running",
     "Status": {"State": "running", "Timestamp": "2026-11-21T17:00:00Z"}},
    {"ServiceID": "s-inf", "NodeID": "w1xxxxxxxxxxxx", "Slot": 2, "DesiredState": "shutdown",
     "Status": {"State": "failed", "Err": "node down"}},
    {"ServiceID": "s-ing", "NodeID": "m1xxxxxxxxxxxx", "DesiredState": "running",
     "Status": {"State": "running"}},
]


def test_swarm_summary_from_docker_api_objects() -> None:
    out = summarize_swarm(NODES, SERVICES, TASKS)
    assert [n["name"] for n in out["nodes"]] == ["manager", "worker1"]
    assert out["nodes"][0]["manager_leader"] and out["nodes"][1]["state"] == "down"
    inf = next(s for s in out["services"] if s["name"] == "cctv_inference")
    assert (inf["desired"], inf["running"], inf["image"]) == (2, 1, "app:1")
    assert [t["node"] for t in inf["tasks"]] == ["manager"], "history tasks are left out"
    ing = next(s for s in out["services"] if s["name"] == "cctv_ingest")
    assert ing["mode"] == "global" and ing["desired"] == 1  # one ready, active node
    snap = {"redis": {"ok": True}, "leader": {"id": "a"}, "standbys": [{"id": "b"}],
            "cameras": [], "nodes_source": "docker", **out}
    codes = {a["code"] for a in alerts(snap)}
    assert codes == {"node_down", "service_degraded"}


def test_failover_history_pairs_gaps_with_acquisitions() -> None:
    entries = [  # newest first, as XREVRANGE returns them
        (b"3-0", {b"event": b"first_result", b"epoch": b"2", b"gap_ms": b"1034"}),
        (b"2-0", {b"event": b"acquired", b"epoch": b"2", b"new": b"b", b"old": b"a",
                  b"reason": b"expired", b"time_ms": b"2000"}),
        (b"1-0", {b"event": b"acquired", b"epoch": b"1", b"new": b"a", b"old": b"",
                  b"reason": b"initial", b"time_ms": b"1000"}),
    ]
    hist = failover_history(entries)
    assert [(f["epoch"], f["old"], f["new"], f["gap_ms"]) for f in hist] == [
        (2, "a", "b", 1034), (1, None, "a", None)]


def test_failover_history_keeps_the_shards_apart() -> None:
    entries = [  # two shards, both at epoch 2: each gap goes to its own shard's take-over
        (b"5-0", {b"event": b"first_result", b"epoch": b"2", b"shard": b"1", b"gap_ms": b"40"}),
        (b"4-0", {b"event": b"first_result", b"epoch": b"2", b"shard": b"0",
                  b"gap_ms": b"1200"}),
        (b"3-0", {b"event": b"acquired", b"epoch": b"2", b"shard": b"1", b"new": b"c",
                  b"old": b"a", b"reason": b"released", b"time_ms": b"3000"}),
        (b"2-0", {b"event": b"acquired", b"epoch": b"2", b"shard": b"0", b"new": b"b",
                  b"old": b"a", b"reason": b"expired", b"time_ms": b"2000"}),
    ]
    hist = failover_history(entries)
    assert [(f["shard"], f["epoch"], f["new"], f["gap_ms"]) for f in hist] == [
        (1, 2, "c", 40), (0, 2, "b", 1200)]


def test_a_shard_without_a_leader_is_red() -> None:
    base = {"redis": {"ok": True}, "nodes_source": "heartbeats", "nodes": [], "services": [],
            "standbys": [{}, {}], "cameras": [], "leader": {"id": "a"}}
    shards = [{"shard": 0, "leader": "a", "cameras": ["c1"]},
              {"shard": 1, "leader": None, "cameras": ["c2", "c3"]}]
    found = [a for a in alerts({**base, "shards": shards}) if a["code"] == "no_leader"]
    assert len(found) == 1 and "shard 1 (c2, c3)" in found[0]["message"]
    shards[1]["leader"] = "b"
    assert not [a for a in alerts({**base, "shards": shards}) if a["code"] == "no_leader"]


def test_red_states() -> None:
    base = {"redis": {"ok": True}, "nodes_source": "heartbeats", "nodes": [], "services": []}
    codes = lambda snap: [a["code"] for a in alerts({**base, **snap})]  # noqa: E731
    assert codes({"leader": None, "standbys": [], "cameras": []}) == ["no_leader",
                                                                      "standby_missing"]
    cams = [{"camera": "c1", "silent": True, "last_frame_age_s": 12.0},
            {"camera": "c2", "silent": False, "lag_growing": True, "consumer_lag": 40},
            {"camera": "c3", "silent": False, "status": "ok"}]
    assert codes({"leader": {"id": "a"}, "standbys": [{}], "cameras": cams}) == [
        "camera_silent", "lag_growing"]
    assert codes({"redis": {"ok": False, "error": "down"}}) == ["redis_down"]
    # Redis itself: a replica not online, no replica under Sentinels, a Sentinel in trouble
    fine = {"leader": {"id": "a"}, "standbys": [{}], "cameras": []}
    online = {"addr": "10.0.0.2:6379", "state": "online"}
    assert codes({**fine, "redis": {"ok": True, "replicas": [online]}}) == []
    assert codes({**fine, "redis": {"ok": True, "replicas": [
        online, {"addr": "10.0.0.3:6379", "state": "wait_bgsave"}]}}) == ["redis_replica_down"]
    sentinels = [{"addr": "s1:26379", "ok": True, "down": False},
                 {"addr": "s2:26379", "ok": False}, {"addr": "s3:26379", "ok": True,
                                                     "down": True}]
    assert codes({**fine, "redis": {"ok": True, "replicas": []}, "sentinels": sentinels}) == [
        "redis_no_replica", "sentinel_down", "sentinel_down"]
    # one Redis without Sentinels (cctv local) has no replica, and that is no alert
    assert codes({**fine, "redis": {"ok": True, "replicas": []}}) == []


def test_result_json_types_and_latency() -> None:
    fields = encode_result(frame="4-0", seq=7, ts=1000000, rx=1002000, pick=1003000,
                           done=1052000, w=640, h=480, late=False, epoch=3, worker="a",
                           model="m", infer_ms=20.5,
                           dets=[{"cls": 2, "name": "car", "conf": 0.9, "xyxy": [1, 2, 3, 4]}])
    raw = dict(zip(fields[::2], fields[1::2], strict=True))
    r = result_json(b"5-1", {k.encode(): str(v).encode() for k, v in raw.items()})
    assert r["id"] == "5-1" and r["seq"] == 7 and r["epoch"] == 3 and r["late"] is False
    assert r["latency_ms"] == {"capture_to_result": 52.0, "ingest_to_result": 50.0}
    assert r["dets"][0]["name"] == "car" and "jpeg" not in r
    with pytest.raises(EntryError):
        result_json("1-0", {**raw, "seq": "x"})
    with pytest.raises(EntryError):
        result_json("1-0", {**raw, "dets": "not json"})


def test_event_framing() -> None:
    assert format_event("stats", {"a": 1}) == 'event: stats\ndata: {"a":1}\n\n'
