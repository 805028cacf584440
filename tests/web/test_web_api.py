"""The web service for real (redis, ingest, an inference replica, web, a camera): login,
sessions and CSRF, every route refused without a login, the JSON API, event streams, MJPEG
fan-out without re-encoding per viewer, metrics, and schemathesis against the OpenAPI file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from werkzeug.routing import Rule

from cctv.core import keys
from cctv.settings import load_settings

from support import (
    VIEWER_PASSWORD,
    VIEWER_USER,
    clip_jpegs,
    post_frame,
    service_env,
    viewer_account,
)
from web_support import AUTH, WebStack, api, wait_for

OPEN_ENDPOINTS = {"auth.login", "static", "healthz", "readyz", "metrics"}


def _routes() -> list[Rule]:
    """Every route of the web app, as registered (blueprints included)."""
    from cctv.web.app import create_app

    s = load_settings({"CCTV_VIEWERS": viewer_account(), "CCTV_REDIS_URL":
                       "redis://127.0.0.1:1/0"})
    return list(create_app(s, background=False).url_map.iter_rules())


def _url(rule: Rule) -> str:
    path = rule.rule
    for arg in rule.arguments:
        path = re.sub(rf"<(?:[a-z]+:)?{arg}>", "cam1" if arg == "camera" else "1", path)
    return path


def test_every_page_and_api_route_refuses_anonymous_requests(stack: WebStack) -> None:
    # a web of its own: the wrong credentials below count against the failure throttles
    # (per address, per user name), which other tests of the shared web must not inherit
    url, _web = stack.start_web("web-anonymous")
    checked = []
    for rule in _routes():
        if rule.endpoint in OPEN_ENDPOINTS:
            continue
        path = _url(rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            # wrong credentials on a few routes only: ten failures would throttle the address
            wrong = [("viewer", "wrong password"), ("nobody", "x")] if path in (
                "/", "/api/v1/cluster", "/video/cam1.mjpg") else []
            for auth in [None, *wrong]:
                r = requests.request(method, url + path, auth=auth, timeout=10,
                                     allow_redirects=False, stream=True)
                try:
                    page = method == "GET" and not path.startswith(("/api/", "/video/"))
                    if rule.endpoint == "auth.logout":  # nothing to log out of: to the login
                        assert r.status_code == 302, (method, path, r.status_code)
                        assert r.headers["Location"].endswith("/login")
                    elif page and auth is None:
                        assert r.status_code == 302, (method, path, r.status_code)
                        assert r.headers["Location"].startswith("/login?next="), path
                    else:
                        assert r.status_code == 401, (method, path, auth, r.status_code)
                        assert r.json()["error"] == "unauthorized"
                        assert r.headers["WWW-Authenticate"].startswith("Basic")
                finally:
                    r.close()
            checked.append(f"{method} {path}")
    assert {"GET /", "GET /cluster", "GET /cameras/cam1", "GET /video/cam1.mjpg",
            "GET /api/v1/cluster", "GET /api/v1/cameras/cam1/stream", "POST /logout",
            "GET /api/v1/cameras/cam1/snapshot.jpg"} <= set(checked), checked
    # a browser's fetch gets no Basic challenge (no native password dialog)
    r = requests.get(stack.url + "/api/v1/cameras", headers={"Sec-Fetch-Mode": "cors"},
                     timeout=10)
    assert r.status_code == 401 and "WWW-Authenticate" not in r.headers
    # open: health, metrics, the login page, static files (with a long cache lifetime)
    for path in ("/healthz", "/readyz", "/metrics", "/login"):
        assert requests.get(url + path, timeout=10).status_code == 200, path
    r = requests.get(stack.url + "/static/app.css", timeout=10)
    assert r.status_code == 200 and "max-age=604800" in r.headers["Cache-Control"]


def _form_csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_login_session_cookie_csrf_and_logout(stack: WebStack) -> None:
    s = requests.Session()
    page = s.get(stack.url + "/login", timeout=10)
    assert page.status_code == 200 and 'name="csrf"' in page.text
    csrf = _form_csrf(page.text)
    form = {"user": VIEWER_USER, "password": VIEWER_PASSWORD, "next": "/cluster"}
    r = s.post(stack.url + "/login", data=form, allow_redirects=False, timeout=10)
    assert r.status_code == 400, "a login without the CSRF token is refused"
    r = s.post(stack.url + "/login", data={**form, "password": "nope", "csrf": csrf},
               allow_redirects=False, timeout=10)
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    r = s.post(stack.url + "/login", data={**form, "csrf": csrf}, allow_redirects=False,
               timeout=10, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403, "a cross-site login post is refused"
    r = s.post(stack.url + "/login", data={**form, "csrf": csrf, "next": "https://evil.example"},
               allow_redirects=False, timeout=10)
    assert r.status_code == 302 and r.headers["Location"] == "/", "no open redirect"
    cookie = r.headers["Set-Cookie"]
    assert "cctv_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Expires=" in cookie
    me = s.get(stack.url + "/api/v1/me", timeout=10).json()
    assert me["user"] == VIEWER_USER and me["auth"] == "session"
    assert 11.9 * 3600 < me["session_expires"] - time.time() <= 12 * 3600
    home = s.get(stack.url + "/", timeout=10)
    assert home.status_code == 200 and 'data-camera="cam1"' in home.text
    assert "private" in home.headers["Cache-Control"]
    assert "default-src 'self'" in home.headers["Content-Security-Policy"]
    assert "https://" not in home.text, "no external resources"
    # logout needs the session's CSRF token
    assert s.post(stack.url + "/logout", allow_redirects=False,
                  timeout=10).status_code == 403
    r = s.post(stack.url + "/logout", data={"csrf": _form_csrf(home.text)},
               allow_redirects=False, timeout=10)
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    assert s.get(stack.url + "/api/v1/me", timeout=10).status_code == 401


def test_sessions_expire_metrics_token_and_bounded_streams(stack: WebStack) -> None:
    url, web = stack.start_web("web-short", web_session_hours=0.0008, metrics_token="m" * 20,
                               web_sse_max_s=2, web_secret_key="k" * 32)
    s = requests.Session()
    csrf = _form_csrf(s.get(url + "/login", timeout=10).text)
    s.post(url + "/login", data={"user": VIEWER_USER, "password": VIEWER_PASSWORD,
                                 "csrf": csrf}, timeout=10)
    assert s.get(url + "/api/v1/me", timeout=10).status_code == 200
    time.sleep(3.2)  # 0.0008 h = 2.9 s
    assert s.get(url + "/api/v1/me", timeout=10).status_code == 401, "the session expired"
    # /metrics with a token
    assert requests.get(url + "/metrics", timeout=10).status_code == 401
    r = requests.get(url + "/metrics", headers={"Authorization": "Bearer " + "m" * 20},
                     timeout=10)
    assert r.status_code == 200 and "cctv_camera_frames_in_per_second" in r.text
    # an event stream ends after CCTV_WEB_SSE_MAX_S (the browser reconnects)
    started = time.monotonic()
    with requests.get(url + "/api/v1/cluster/stream", auth=AUTH, stream=True, timeout=20) as r:
        body = r.raw.read().decode()
    assert time.monotonic() - started < 10
    assert body.startswith("retry: ") and "event: bye" in body
    assert web.proc.poll() is None
    assert "CCTV_WEB_SECRET_KEY is not set" not in web.log()
    assert "CCTV_WEB_SECRET_KEY is not set" in stack.web.log(), "the warning when unset"


def test_ingest_metrics_token(start_ingest) -> None:
    url, _svc = start_ingest(metrics_token="t" * 20)
    assert requests.get(url + "/metrics", timeout=10).status_code == 401
    assert requests.get(url + "/metrics", headers={"Authorization": "Bearer " + "t" * 20},
                        timeout=10).status_code == 200
    assert requests.get(url + "/healthz", timeout=10).status_code == 200


def test_basic_auth_throttles_failures(stack: WebStack) -> None:
    url, _web = stack.start_web("web-throttle")
    for _ in range(10):
        assert requests.get(url + "/api/v1/cameras", auth=("viewer", "bad"),
                            timeout=10).status_code == 401
    r = requests.get(url + "/api/v1/cameras", auth=AUTH, timeout=10)
    assert r.status_code == 429 and r.json()["error"] == "too_many_failures"


def test_camera_api(stack: WebStack) -> None:
    wait_for(lambda: (api(stack, "/api/v1/cameras").json()["cameras"] or [{}])[0]
             .get("fps_processed", 0) > 0, 20, "cam1 figures")
    cams = api(stack, "/api/v1/cameras").json()["cameras"]
    cam = next(c for c in cams if c["camera"] == "cam1")
    assert cam["status"] == "ok" and 4 < cam["fps_in"] < 12, cam
    assert cam["latency_ms"]["capture_to_result"] > 0 and cam["stream_length"] > 0
    assert cam["counters"]["accepted"] > 0 and cam["consumer_lag"] is not None
    one = api(stack, "/api/v1/cameras/cam1").json()
    assert one["latest"]["dets"] and isinstance(one["latest"]["seq"], int)
    res = api(stack, "/api/v1/cameras/cam1/detections", params={"count": 3}).json()
    assert len(res["results"]) == 3
    ids = [r["id"] for r in res["results"]]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)
    latest = api(stack, "/api/v1/cameras/cam1/detections/latest").json()
    assert latest["dets"] and latest["epoch"] == 1
    # bad input: clear 4xx JSON
    for path, status, code in [
        ("/api/v1/cameras/cam1/detections?count=0", 400, "bad_parameter"),
        ("/api/v1/cameras/cam1/detections?count=abc", 400, "bad_parameter"),
        ("/api/v1/cameras/cam1/detections?count=%C2%B2", 400, "bad_parameter"),  # '²'
        ("/api/v1/cameras/-bad-/detections", 400, "bad_camera"),
        ("/api/v1/cameras/nosuchcam", 404, "unknown_camera"),
        ("/api/v1/cameras/cam1/snapshot.jpg?download=maybe", 400, "bad_parameter"),
        ("/api/v1/failovers?count=99999", 400, "bad_parameter"),
        ("/api/v1/nosuchroute", 404, "not_found"),
        ("/video/nosuchcam.mjpg", 404, "unknown_camera"),
    ]:
        r = api(stack, path)
        assert r.status_code == status and r.json()["error"] == code, (path, r.text)
    # the snapshot is the annotated frame, as a download when asked
    r = api(stack, "/api/v1/cameras/cam1/snapshot.jpg", params={"download": "1"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert r.headers["Content-Disposition"].startswith('attachment; filename="cam1-')
    img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (480, 640, 3)


def test_cluster_api_heartbeats_and_ingest_counts(stack: WebStack) -> None:
    # a few refused frames: the replies by status are counted cluster-wide in Redis
    ingest = f"http://127.0.0.1:{stack.ingest_port}"
    with requests.Session() as s:
        for i in range(3):
            assert post_frame(s, ingest, "cam1", "wrong", b"\xff\xd8\xff\xd9",
                              10**9 + i).status_code == 403
    wait_for(lambda: int(stack.rdb.hget(keys.INGEST_RESPONSES, "403") or 0) >= 3, 10,
             "the 403 replies in Redis")
    snap = api(stack, "/api/v1/cluster").json()
    assert snap["leader"]["id"] == "a" and snap["leader"]["epoch"] >= 1
    assert snap["leader"]["lease_age_s"] is not None
    assert snap["nodes_source"] == "heartbeats" and snap["docker"]["available"] is False
    services = {i["service"] for n in snap["nodes"] for i in n["instances"]}
    assert {"ingest", "inference", "web"} <= services, snap["nodes"]
    assert snap["ingest"]["replies_total"]["403"] >= 3
    assert snap["ingest"]["replies_total"]["202"] > 0
    assert snap["ingest"]["accepted_per_s"] > 0
    assert snap["redis"]["ok"] and snap["redis"]["used_memory"] > 0
    assert snap["redis"]["connected_clients"] > 0
    assert snap["failovers"][-1]["reason"] == "initial"
    codes = {a["code"] for a in snap["alerts"]}
    assert "no_leader" not in codes and "standby_missing" in codes, "one replica: red"
    assert any(c["camera"] == "cam1" and c["status"] == "ok" for c in snap["cameras"])
    hist = api(stack, "/api/v1/failovers", params={"count": 5}).json()["failovers"]
    assert hist and hist[0]["new"] == "a"


def _read_events(url: str, want: set[str], timeout_s: float = 15) -> dict[str, dict]:
    got: dict[str, dict] = {}
    event = None
    end = time.monotonic() + timeout_s
    with requests.get(url, auth=AUTH, stream=True, timeout=timeout_s) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event:
                got.setdefault(event, json.loads(line[6:]))
            if want <= set(got) or time.monotonic() > end:
                break
    return got


def test_event_streams(stack: WebStack) -> None:
    got = _read_events(stack.url + "/api/v1/cameras/cam1/stream", {"detection", "stats"})
    assert got["detection"]["dets"] and got["detection"]["latency_ms"]["capture_to_result"]
    assert got["stats"]["camera"] == "cam1" and "fps_in" in got["stats"]
    got = _read_events(stack.url + "/api/v1/cluster/stream", {"cluster"})
    assert got["cluster"]["leader"]["id"] == "a"


def test_many_viewers_share_one_encode(stack: WebStack) -> None:
    def encoded() -> float:
        text = requests.get(stack.url + "/metrics", timeout=10).text
        m = re.search(r'^cctv_web_frames_encoded_total\{camera="cam1"\} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    stop = threading.Event()
    frames = [0] * 12

    def view(i: int) -> None:
        with requests.get(stack.url + "/video/cam1.mjpg", auth=AUTH, stream=True,
                          timeout=20) as r:
            for chunk in r.iter_content(65536):
                frames[i] += chunk.count(b"\xff\xd9")
                if stop.is_set():
                    return

    threads = [threading.Thread(target=view, args=(i,), daemon=True) for i in range(12)]
    for t in threads:
        t.start()
    wait_for(lambda: all(n >= 1 for n in frames), 30, "every viewer's first frame")
    e0, r0 = encoded(), stack.results()
    time.sleep(3)  # the measuring window
    e1, r1 = encoded(), stack.results()
    stop.set()
    for t in threads:
        t.join(10)
    assert all(n >= 5 for n in frames), frames
    # one encode per result for all twelve viewers (not twelve)
    assert 0 < e1 - e0 <= (r1 - r0) + 2, (e1 - e0, r1 - r0)


def test_metrics_of_every_service(stack: WebStack) -> None:
    web = requests.get(stack.url + "/metrics", timeout=10).text
    for name in ("cctv_camera_frames_in_per_second", "cctv_camera_frames_processed_per_second",
                 "cctv_camera_frames_skipped_per_second", "cctv_camera_consumer_lag",
                 "cctv_camera_latency_seconds", "cctv_cluster_leader_epoch",
                 "cctv_cluster_leader_present", "cctv_web_sse_clients"):
        assert re.search(rf"^{name}(\{{.*\}})? ", web, re.M), name
    assert re.search(r'^cctv_camera_frames_in_per_second\{camera="cam1"\} [1-9]', web, re.M)
    ingest = requests.get(f"http://127.0.0.1:{stack.ingest_port}/metrics", timeout=10).text
    assert 'cctv_ingest_requests_total{status="202"}' in ingest
    inference = requests.get(f"http://{stack.inference_binds['a']}/metrics", timeout=10).text
    for name in ("cctv_inference_seconds_bucket", "cctv_inference_leader_epoch",
                 'cctv_inference_failovers_total{reason="initial"}',
                 'cctv_inference_failovers_total{reason="expired"}',
                 "cctv_inference_stream_lag_seconds"):
        assert name in inference, name


def _schemathesis() -> list[str] | None:
    exe = Path(sys.executable).parent / "schemathesis"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("schemathesis")
    return [found] if found else None


#: an event as the events service stores it (docs/events.md); its id is the OpenAPI file's example
LINE_EVENT = {
    "id": "gate-cars_in-1763745881123-17", "camera": "gate", "rule": "cars_in", "type": "line",
    "status": "closed", "start_ms": 1763745881123.0, "end_ms": 1763745881123.0,
    "last_ms": 1763745881123.0, "reason": "", "track": 17, "tracks": [17], "class": "car",
    "classes": ["car"], "zone": "", "line": "entrance", "direction": "down", "count": 1,
    "conf": 0.87, "box": [212, 240, 301, 288],
    "subjects": [{"track": 17, "name": "car", "cls": 2, "conf": 0.87, "xyxy": [212, 240, 301, 288],
                  "det_id": "1763745881190-0", "frame_id": "1763745881130-0",
                  "ts_ms": 1763745881123.0}],
    "first_frame": "1763745881130-0", "last_frame": "1763745881130-0",
    "frame": "1763745881130-0", "det": "1763745881190-0", "width": 640, "height": 480,
    "snapshot": "gate/2025-11-21/gate-cars_in-1763745881123-17.jpg",
    "crop": "gate/2025-11-21/gate-cars_in-1763745881123-17.crop.jpg",
    "verified": "not required", "verifier": "",
    "caption": "1 car crossed line 'entrance' heading down at 17:24:41"}


def _store_events(stack: WebStack) -> None:
    """Two stored events for the API to return: a line crossing with images, and an open count
    event without images or a track (the nullable fields)."""
    from cctv.events.storage import EventStore

    store = EventStore(stack.rdb, stack.tmp / "events")
    store.emit("instant", LINE_EVENT)
    store.emit("start", {
        **LINE_EVENT, "id": "cam1-crowd-1763745890000-n", "camera": "cam1", "rule": "crowd",
        "type": "count", "status": "open", "start_ms": 1763745890000.0, "end_ms": None,
        "track": None, "tracks": [], "classes": ["person"], "class": "person", "zone": "gate",
        "line": "", "direction": "", "count": 5, "snapshot": "", "crop": "",
        "subjects": [{**LINE_EVENT["subjects"][0], "track": None, "name": "person", "cls": 0}],
        "caption": "5 persons in zone 'gate' at 17:24:50"})
    stack.rdb.hincrby(keys.line_counts("gate"), "cars_in:down", 1)


def test_schemathesis_finds_no_server_errors(stack: WebStack, artifacts_dir: Path) -> None:
    st = _schemathesis()
    if st is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    # the events API is part of `cctv web` (its blueprint) and of the OpenAPI file
    _store_events(stack)
    events = api(stack, "/api/v1/events").json()["events"]
    assert [e["id"] for e in events] == ["cam1-crowd-1763745890000-n", LINE_EVENT["id"]]
    assert events[0]["snapshot_url"] is None and events[1]["snapshot_url"].endswith(".jpg")
    spec = Path(__file__).resolve().parents[2] / "services" / "cctv" / "web" / "openapi.yaml"
    out = subprocess.run(
        [*st, "run", str(spec), "--url", stack.url, "--auth", f"{VIEWER_USER}:{VIEWER_PASSWORD}",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
         "response_schema_conformance",
         "--exclude-tag", "stream", "--max-examples", "25", "--request-timeout", "10",
         "--workers", "2", "--generation-database", "none", "--no-color",
         "--report", "har", "--report-har-path", "schemathesis.har"],
        capture_output=True, text=True, timeout=240, cwd=artifacts_dir,
        env={"PATH": "/usr/bin:/bin", "HOME": str(artifacts_dir), "NO_COLOR": "1",
             "SCHEMATHESIS_HOOKS": ""})
    (artifacts_dir / "schemathesis.txt").write_text(out.stdout + out.stderr)
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
    # it tested the events API too, with replies holding the stored events
    har_path = artifacts_dir / "schemathesis.har"  # every request and reply (~10 MB)
    har = json.loads(har_path.read_text())["log"]["entries"]
    ok = {e["request"]["url"].removeprefix(stack.url).split("?")[0] for e in har
          if e["request"]["method"] == "GET" and e["response"]["status"] == 200}
    assert {"/api/v1/events", "/api/v1/events/stats", "/api/v1/events/" + LINE_EVENT["id"],
            "/api/v1/cameras/cam1"} <= ok, sorted(ok)
    har_path.unlink()  # kept only when something failed
    assert stack.web.proc.poll() is None
    assert "Traceback" not in stack.web.log()


def test_a_camera_added_then_removed_with_the_command_comes_and_goes_everywhere(
        stack: WebStack) -> None:
    """Added with `cctv cameras add` (no restart): its frames are accepted at once and it is
    listed; removed: gone from the list, the grid and its video URL, its frames refused."""
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "cctv", "cameras", *a], capture_output=True, text=True,
        env=service_env(stack.redis_server.url), timeout=60)
    out = run("add", "yard")
    assert out.returncode == 0, out.stderr
    token = next(ln.split()[1] for ln in out.stdout.splitlines() if ln.startswith("token:"))
    ingest = f"http://127.0.0.1:{stack.ingest_port}"
    jpeg = clip_jpegs(n=1)[0]
    with requests.Session() as http:
        assert post_frame(http, ingest, "yard", token, jpeg, 1).status_code == 202
        listed = lambda: [c["camera"] for c in api(stack, "/api/v1/cameras").json()["cameras"]]  # noqa: E731
        wait_for(lambda: "yard" in listed(), 15, "yard listed", stack.services)
        assert run("remove", "yard").returncode == 0
        names = listed()
        assert "yard" not in names and "cam1" in names
        assert api(stack, "/video/yard.mjpg").status_code == 404
        assert api(stack, "/api/v1/cameras/yard").status_code == 404
        assert 'href="/cameras/yard"' not in api(stack, "/").text
        assert post_frame(http, ingest, "yard", token, jpeg, 2).status_code == 403
    assert 0 < stack.rdb.ttl(keys.frames("yard")) <= 300


def test_the_admin_api_changes_the_registry_with_its_own_token_only(stack: WebStack) -> None:
    admin = "admin-token-for-the-tests-0123456789"
    url, _web = stack.start_web("web-admin", admin_token=admin)
    wait_for(lambda: requests.get(url + "/healthz", timeout=5).ok, 30, "admin web up")
    base = url + "/api/v1/admin/cameras"
    bearer = {"Authorization": f"Bearer {admin}"}
    # no token, a wrong one, a viewer's login: all refused
    assert requests.get(base, timeout=10).status_code == 401
    assert requests.get(base, headers={"Authorization": "Bearer wrong"},
                        timeout=10).status_code == 401
    assert requests.get(base, auth=AUTH, timeout=10).status_code == 401

    r = requests.post(base, json={"name": "lobby", "source": "rtsp://u:pw-secret@10.1.1.1/s",
                                  "fps": 4, "detect": {"classes": ["person"]}},
                      headers=bearer, timeout=10)
    assert r.status_code == 201, r.text
    assert len(r.json()["token"]) >= 20 and "pw-secret" not in r.text
    assert requests.post(base, json={"name": "lobby"}, headers=bearer,
                         timeout=10).status_code == 409
    listed = requests.get(base, headers=bearer, timeout=10).json()["cameras"]
    assert [c["name"] for c in listed if c["name"] == "lobby"] == ["lobby"]
    r = requests.patch(base + "/lobby", json={"detect": {"min_conf": 0.5}}, headers=bearer,
                       timeout=10)
    assert r.status_code == 200 and r.json()["camera"]["detect"] == {"min_conf": 0.5}, r.text
    r = requests.post(base + "/lobby/rotate-token", json={}, headers=bearer, timeout=10)
    assert r.status_code == 200 and r.json()["camera"]["rotating"], r.text
    for bad in ({"name": "x y"}, {"name": "ok", "fps": "fast"}, {"name": "ok", "colour": 1},
                {"name": "ok", "detect": {"min_conf": 3}}):
        r = requests.post(base, json=bad, headers=bearer, timeout=10)
        assert r.status_code == 400 and r.json()["error"] in ("invalid", "bad_body"), r.text
    assert requests.post(base, data="not json", headers=bearer, timeout=10).status_code == 400
    assert requests.delete(base + "/lobby", headers=bearer, timeout=10).status_code == 200
    assert requests.get(base + "/lobby", headers=bearer, timeout=10).status_code == 404
    assert requests.delete(base + "/nobody", headers=bearer, timeout=10).status_code == 404
