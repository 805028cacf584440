"""Nobody gets in where they do not belong: every route of ingest, web, the inference replica
and the events service (enumerated from the Flask url_maps and the health servers' route
list, so a new route is covered without touching this file), tried with no credentials,
wrong credentials, a camera token on the viewer and the health ports, and a viewer login on
ingest. Every try must be refused with the status docs/security.md documents; the open
routes (/healthz, /readyz, /login, static files) must answer without leaking internals; an
unknown camera and a wrong token get byte-identical replies from ingest.

Real processes (redis-server, gunicorn ingest and web, an inference replica, the events
service). With CCTV_BENCH_ACCESS_MATRIX=<dir> the figures go to <dir>/access_matrix.json for
bench/access_matrix.py."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
from requests.adapters import HTTPAdapter

from cctv.core.health_server import ROUTES as HEALTH_ROUTES
from cctv.settings import load_settings

from support import (
    MODEL_OPENVINO,
    VIEWER_PASSWORD,
    VIEWER_USER,
    Service,
    free_port,
    service_env,
    start_listening,
    viewer_account,
    wait_for,
    wait_port,
)

TOK1, TOK2 = "tok1-16charsfortests", "tok2-16charsfortests"
CAMERAS = f"cam1:{TOK1},cam2:{TOK2}"
METRICS = "metrics-token-for-the-access-matrix"
#: what the services must not say in an open route's body
LEAKS = re.compile(r"Traceback|Error \d+|refused|Errno|redis://|/run/secrets|"
                   + re.escape(METRICS) + "|" + re.escape(TOK1), re.I)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


#: credentials that belong nowhere they are tried here (the viewer's only on ingest)
WRONG = {
    "none": {},
    "wrong_bearer": {"Authorization": "Bearer wrong-token-of-twenty-chars"},
    "wrong_basic": {"Authorization": _basic(VIEWER_USER, "not-the-password")},
}
CAMERA = {
    "camera_token": {"Authorization": f"Bearer {TOK1}"},
    "camera_basic": {"Authorization": _basic("cam1", TOK1)},
}
VIEWER = {"viewer_basic": {"Authorization": _basic(VIEWER_USER, VIEWER_PASSWORD)}}


class _FromAddress(HTTPAdapter):
    """Connections from one loopback address: the per-address failure throttles see each
    try from an address of its own (127.0.0.0/8 is all loopback), so a refusal here is the
    credential check's answer, not the throttle's."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        kwargs["source_address"] = (self.address, 0)
        return super().init_poolmanager(*args, **kwargs)


_addresses = (f"127.0.{i // 250}.{i % 250 + 2}" for i in range(60000))


def _session(cookie: str | None = None) -> requests.Session:
    s = requests.Session()
    s.mount("http://", _FromAddress(next(_addresses)))
    if cookie:
        s.cookies.set("cctv_session", cookie)
    return s


@dataclass
class Case:
    service: str
    method: str
    path: str
    credential: str
    expected: str
    status: int = 0
    ok: bool = False
    detail: str = ""


def _fill(rule: str) -> str:
    """A concrete path for a Flask rule (``<camera>`` -> cam1, ``<path:filename>`` -> app.css)."""
    def value(m: re.Match) -> str:
        name = m.group(2)
        return {"camera": "cam1", "filename": "app.css"}.get(name, "cam1-r-1-1")
    return re.sub(r"<(?:(\w+):)?(\w+)>", value, rule)


def _flask_routes(app) -> list[tuple[str, str, str]]:
    """(endpoint, method, path) of every rule of ``app``."""
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, _fill(rule.rule)))
    return sorted(out)


class Matrix:
    """The services and every case tried against them."""

    def __init__(self, redis_url: str, tmp: Path) -> None:
        self.tmp, self.services, self.cases = tmp, [], []
        common = {"metrics_token": METRICS, "cameras": CAMERAS}
        self.ingest_health, self.web_health = free_port(), free_port()
        self.ingest = self._flask("ingest", redis_url, ingest_workers=1,
                                  ingest_health_bind=f"127.0.0.1:{self.ingest_health}",
                                  ingest_auth_fail_limit=100000, **common)
        self.web = self._flask("web", redis_url, web_user_failures_per_minute=100000,
                               web_health_bind=f"127.0.0.1:{self.web_health}", **common)
        self.events_port, self.inference_port = free_port(), free_port()
        rules = tmp / "events.json"
        rules.write_text(json.dumps({"cameras": {"cam1": {"rules": []}}}))
        self.services.append(Service(["events"], service_env(
            redis_url, events_config=rules, events_dir=tmp / "media",
            events_http_bind=f"127.0.0.1:{self.events_port}", **common), tmp, "events"))
        self.services.append(Service(["inference", "--id", "matrix"], service_env(
            redis_url, model=MODEL_OPENVINO, inference_http_bind=f"127.0.0.1:{self.inference_port}",
            **common), tmp, "inference"))
        for port in (self.events_port, self.inference_port, self.ingest_health,
                     self.web_health):
            wait_port(port, 90, None)
        self.cookie = self._viewer_cookie()

    def _flask(self, name: str, redis_url: str, **cctv: object) -> str:
        port, svc = start_listening(lambda p: Service(
            [name], service_env(redis_url, **{f"{name}_bind": f"127.0.0.1:{p}"}, **cctv),
            self.tmp, f"{name}-{p}"))
        self.services.append(svc)
        return f"http://127.0.0.1:{port}"

    def _viewer_cookie(self) -> str:
        s = _session()
        page = s.get(self.web + "/login", timeout=10).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        r = s.post(self.web + "/login", data={"user": VIEWER_USER, "password": VIEWER_PASSWORD,
                                              "csrf": csrf}, allow_redirects=False, timeout=10)
        assert r.status_code == 302, r.text
        return s.cookies["cctv_session"]

    def close(self) -> None:
        for svc in self.services:
            svc.stop()

    # ---- trying ------------------------------------------------------------------------
    def attempt(self, service: str, base: str, method: str, path: str, credential: str,
                headers: dict[str, str], expected: str, cookie: str | None = None) -> Case:
        case = Case(service, method, path, credential, expected)
        try:
            r = _session(cookie).request(method, base + path, headers=headers, timeout=15,
                                         allow_redirects=False, data=b"")
        except requests.RequestException as exc:
            case.detail = f"no answer: {exc}"
            self.cases.append(case)
            return case
        case.status = r.status_code
        case.ok, case.detail = _judge(expected, r)
        self.cases.append(case)
        return case


def _judge(expected: str, r: requests.Response) -> tuple[bool, str]:
    """Does the reply ``r`` match the documented answer ``expected``?"""
    location = r.headers.get("Location", "")
    if expected == "login":  # a page: the browser goes to the login form
        return r.status_code == 302 and urlparse(location).path == "/login", location
    if expected == "open":  # answered for anyone, and saying nothing about the inside
        leak = LEAKS.search(r.text)
        return r.status_code in (200, 503) and not leak, (leak.group(0) if leak else "")
    want = int(expected)
    body_ok = True
    if want in (401, 403) and r.headers.get("Content-Type", "").startswith("application/json"):
        body_ok = not LEAKS.search(r.text)
    return r.status_code == want and body_ok, r.text[:120]


def _expected_web(endpoint: str, method: str, path: str, public: frozenset[str],
                  credential: str) -> str:
    if endpoint == "metrics":
        return "401"
    if endpoint == "auth.login" and method == "POST":
        return "400"  # no form with its CSRF token: refused before any password is looked at
    if endpoint in public:
        return "open"
    if endpoint == "auth.logout":
        return "login"  # no session: nothing to log out, back to the form
    page = method == "GET" and not path.startswith(("/api/", "/video/"))
    return "login" if page and credential == "none" else "401"


def _health_targets(m: Matrix) -> list[tuple[str, str]]:
    return [("ingest-health", f"http://127.0.0.1:{m.ingest_health}"),
            ("web-health", f"http://127.0.0.1:{m.web_health}"),
            ("inference", f"http://127.0.0.1:{m.inference_port}"),
            ("events", f"http://127.0.0.1:{m.events_port}")]


def run_matrix(m: Matrix) -> list[Case]:
    """Every case; see the module doc."""
    from cctv.ingest.app import create_app as ingest_app
    from cctv.web.app import create_app as web_app
    from cctv.web.auth import PUBLIC_ENDPOINTS

    settings = load_settings({"CCTV_VIEWERS": viewer_account(), "CCTV_CAMERAS": CAMERAS,
                              "CCTV_REDIS_URL": "redis://127.0.0.1:1/0"})
    foreign = {**WRONG, **CAMERA}
    for endpoint, method, path in _flask_routes(web_app(settings, background=False)):
        for cred, headers in foreign.items():
            m.attempt("web", m.web, method, path, cred, headers,
                      _expected_web(endpoint, method, path, PUBLIC_ENDPOINTS, cred))
    # a camera's name and token typed into the login form: not a viewer account
    s = _session()
    csrf = re.search(r'name="csrf" value="([^"]+)"', s.get(m.web + "/login", timeout=10).text)
    r = s.post(m.web + "/login", data={"user": "cam1", "password": TOK1, "csrf": csrf.group(1)},
               allow_redirects=False, timeout=10)
    m.cases.append(Case("web", "POST", "/login", "camera_login_form", "401", r.status_code,
                        r.status_code == 401 and "cctv_session" not in r.cookies, ""))
    for endpoint, method, path in _flask_routes(ingest_app(settings)):
        if endpoint in ("healthz", "readyz"):
            for cred, headers in {**foreign, **VIEWER}.items():
                m.attempt("ingest", m.ingest, method, path, cred, headers, "open")
            continue
        if endpoint == "metrics":
            for cred, headers in {**foreign, **VIEWER}.items():
                m.attempt("ingest", m.ingest, method, path, cred, headers, "401")
            m.attempt("ingest", m.ingest, method, path, "viewer_session", {}, "401",
                      cookie=m.cookie)
            continue
        assert endpoint == "post_frame", f"a new ingest route {path}: add its expectation"
        for cred, expected in (("none", "401"), ("wrong_bearer", "403"),
                               ("wrong_basic", "401"), ("viewer_basic", "401"),
                               ("camera_basic", "401")):
            m.attempt("ingest", m.ingest, method, path, cred, {**WRONG, **VIEWER,
                                                               **CAMERA}[cred], expected)
        m.attempt("ingest", m.ingest, method, path, "viewer_session", {}, "401",
                  cookie=m.cookie)
        m.attempt("ingest", m.ingest, method, path.replace("cam1", "cam2"), "camera_token",
                  CAMERA["camera_token"], "403")  # another camera's token
    for name, base in _health_targets(m):
        for path in HEALTH_ROUTES:
            for cred, headers in {**foreign, **VIEWER}.items():
                m.attempt(name, base, "GET", path, cred, headers,
                          "401" if path == "/metrics" else "open")
    return m.cases


def _raw_frame_reply(base: str, camera: str, token: str) -> bytes:
    u = urlparse(base)
    body = b"\xff\xd8\xff\xd9"
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall((f"POST /api/v1/cameras/{camera}/frames HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {token}\r\nContent-Type: image/jpeg\r\n"
                   f"X-Frame-Seq: 1\r\nX-Capture-Ts: 1\r\nContent-Length: {len(body)}\r\n"
                   "Connection: close\r\n\r\n").encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return re.sub(rb"\r\nDate: [^\r]*", b"", data)


@pytest.fixture(scope="module")
def matrix(redis_server, tmp_path_factory) -> Matrix:
    m = Matrix(redis_server.url, tmp_path_factory.mktemp("access-matrix"))
    try:
        yield m
    finally:
        m.close()


def test_every_route_refuses_foreign_credentials(matrix: Matrix) -> None:
    cases = run_matrix(matrix)
    services = {c.service for c in cases}
    assert services == {"web", "ingest", "ingest-health", "web-health", "inference", "events"}
    assert len(cases) > 150, len(cases)
    # the matrix can fail: the right credentials do get in
    assert requests.get(matrix.web + "/api/v1/cameras", headers=VIEWER["viewer_basic"],
                        timeout=10).status_code == 200
    for base in (matrix.ingest, f"http://127.0.0.1:{matrix.events_port}"):
        assert requests.get(base + "/metrics", headers={"Authorization": f"Bearer {METRICS}"},
                            timeout=10).status_code == 200
    identical = _raw_frame_reply(matrix.ingest, "nosuchcam", TOK1) == \
        _raw_frame_reply(matrix.ingest, "cam1", "x" * len(TOK1))
    failures = [c for c in cases if not c.ok] + ([] if identical else [Case(
        "ingest", "POST", "/api/v1/cameras/<camera>/frames", "unknown vs wrong", "identical",
        detail="the replies differ")])
    out = os.environ.get("CCTV_BENCH_ACCESS_MATRIX")
    if out:
        Path(out, "access_matrix.json").write_text(json.dumps({
            "access_matrix_cases": len(cases) + 1,
            "access_matrix_failures": len(failures),
            "by_service": {s: sum(c.service == s for c in cases) for s in sorted(services)}}))
    assert not failures, "\n".join(
        f"{c.service} {c.method} {c.path} [{c.credential}] expected {c.expected}, got "
        f"{c.status}: {c.detail}" for c in failures[:40])


def test_readyz_says_a_word_not_the_error(redis_server, tmp_path) -> None:
    """While Redis is away, /readyz of ingest (its app and its health port) answers 503 with a
    fixed reason word; the connection error is only in the log."""
    health = free_port()
    port, svc = start_listening(lambda p: Service(["ingest"], service_env(
        "redis://127.0.0.1:1/0", ingest_bind=f"127.0.0.1:{p}", cameras=CAMERAS,
        ingest_workers=1, ingest_health_bind=f"127.0.0.1:{health}"), tmp_path, f"ingest-{p}"))
    try:
        wait_port(health, 30, svc.proc)
        for base in (f"http://127.0.0.1:{port}", f"http://127.0.0.1:{health}"):
            r = requests.get(base + "/readyz", timeout=10)
            assert r.status_code == 503
            assert r.json() == {"status": "not ready", "reason": "redis_unavailable"}, r.text
        wait_for(lambda: "not ready: redis" in svc.log(), 10, "the error in the log")
    finally:
        svc.stop()
