"""TLS at the proxy, with real parts: a real nginx rendered from the stack's template with a
certificate from ``stack/tls``, scanned by a real scanner (sslyze); real ingest and web
behind it for HSTS, the Secure session cookie and plain HTTP on the TLS ports."""

from __future__ import annotations

import re
import subprocess

import pytest
import requests
from slowload import proxied_services
from tlsfiles import make_tls

from bench.tls import tls_findings
from cctv.core.clientaddr import TrustedProxyScheme
from cctv.core.settings import trusted_networks

from support import VIEWER_PASSWORD, VIEWER_USER

TOKEN = "tok1-16charsfortests"
CAMERAS = f"cam1:{TOKEN}"


@pytest.fixture(scope="module")
def cas(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("tls")
    return {"good": make_tls(base / "good"), "other": make_tls(base / "other")}


def test_scan_finds_no_weak_protocol_cipher_or_certificate(redis_server, tmp_path, cas) -> None:
    good, other = cas["good"], cas["other"]
    with proxied_services(redis_server.url, tmp_path, cameras=CAMERAS, web=False,
                          tls=good) as stack:
        port = int(stack.ingest.rsplit(":", 1)[1])
        findings, summary = tls_findings("127.0.0.1", port, "localhost", good.ca,
                                         ["localhost", "127.0.0.1"])
        assert findings == [], findings
        assert summary["tls_1_0"] == summary["tls_1_1"] == summary["ssl_3_0"] == []
        assert summary["tls_1_2"] and summary["tls_1_3"]
        assert all("GCM" in c or "CHACHA20" in c for c in summary["tls_1_2"])
        assert summary["hsts_max_age"] == 63072000
        # the same scan sees a chain that does not lead to the trusted CA, and a name the
        # certificate does not cover
        findings, _ = tls_findings("127.0.0.1", port, "localhost", other.ca,
                                   ["localhost", "camera-gw.example"])
        assert any("chain does not validate" in f for f in findings), findings
        assert any("does not cover ['camera-gw.example']" in f for f in findings), findings


def test_stack_tls_covers_the_names_given(tmp_path) -> None:
    files = make_tls(tmp_path / "tls", "manager,worker1,10.0.0.5,fd00::5")
    text = subprocess.run(["openssl", "x509", "-in", str(files.cert), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    for name in ("DNS:manager", "DNS:worker1", "IP Address:10.0.0.5", "IP Address:FD00"):
        assert name in text, text
    assert "CA:FALSE" in text and "TLS Web Server Authentication" in text
    ok = subprocess.run(["openssl", "verify", "-CAfile", str(files.ca), str(files.cert)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (files.key.stat().st_mode & 0o077) == 0 and (files.dir / "ca.key").stat().st_mode \
        & 0o077 == 0
    # the same names again: the certificate is kept (the senders' pin stays valid)
    again = make_tls(tmp_path / "tls", "manager,worker1,10.0.0.5,fd00::5")
    assert again.fingerprint == files.fingerprint
    renamed = make_tls(tmp_path / "tls", "manager,worker1,worker2")
    assert renamed.fingerprint != files.fingerprint


def test_hsts_secure_cookie_and_plain_http_over_the_tls_ports(redis_server, rdb, tmp_path,
                                                               cas) -> None:
    good = cas["good"]
    with proxied_services(redis_server.url, tmp_path, cameras=CAMERAS, tls=good,
                          web_cookie_secure=True) as stack:
        s = requests.Session()
        s.verify = str(good.ca)
        s.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would win over verify
        page = s.get(f"{stack.web}/login", timeout=10)
        assert page.status_code == 200
        assert page.headers["Strict-Transport-Security"] == "max-age=63072000"
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text[:500]
        resp = s.post(f"{stack.web}/login", data={"user": VIEWER_USER, "password":
                                                  VIEWER_PASSWORD, "csrf": csrf.group(1)},
                      allow_redirects=False, timeout=10)
        assert resp.status_code == 302, resp.text[:300]
        cookie = resp.headers["Set-Cookie"]
        assert "cctv_session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie
        assert resp.headers["Strict-Transport-Security"] == "max-age=63072000"
        assert s.get(f"{stack.web}/api/v1/cameras", timeout=10).status_code == 200
        # ingest's replies carry HSTS too, its own errors included
        frame = s.post(f"{stack.ingest}/api/v1/cameras/cam1/frames", data=b"x", timeout=10,
                       headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg",
                                "X-Frame-Seq": "1", "X-Capture-Ts": "1"})
        assert frame.status_code == 400 and "Strict-Transport-Security" in frame.headers

        # plain HTTP on the TLS ports: web redirects to https, ingest refuses (JSON, 400)
        web_plain = stack.web.replace("https://", "http://")
        moved = requests.get(f"{web_plain}/login?next=/", allow_redirects=False, timeout=10)
        assert moved.status_code == 301
        assert moved.headers["Location"] == f"{stack.web}/login?next=/"
        ingest_plain = stack.ingest.replace("https://", "http://")
        refused = requests.post(f"{ingest_plain}/api/v1/cameras/cam1/frames", data=b"x",
                                headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert refused.status_code == 400 and refused.json()["error"] == "tls_required"
        assert "Strict-Transport-Security" not in refused.headers  # HSTS only over TLS

        # a login that reaches web over plain HTTP (not through the TLS proxy) is refused with
        # the reason: the browser would drop the Secure cookie and loop back to the login
        direct = requests.Session()
        page = direct.get(f"{stack.web_direct}/login", timeout=10)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        resp = direct.post(f"{stack.web_direct}/login", data={
            "user": VIEWER_USER, "password": VIEWER_PASSWORD, "csrf": csrf.group(1)},
            allow_redirects=False, timeout=10)
        assert resp.status_code == 400 and "Log in over HTTPS" in resp.text
        metrics = requests.get(f"{stack.web_direct}/metrics", timeout=10).text
        assert "cctv_web_plain_http_logins_refused_total 1.0" in metrics
        assert "login over plain HTTP" in stack.logs()


def test_forwarded_proto_is_trusted_from_the_proxy_only() -> None:
    seen: dict[str, str] = {}

    def app(environ, start_response):
        seen["scheme"] = environ["wsgi.url_scheme"]
        return []

    wrapped = TrustedProxyScheme(app, trusted_networks("127.0.0.1/32,10.0.0.0/8"))
    for peer, header, scheme in [("127.0.0.1", "https", "https"), ("10.1.2.3", "https", "https"),
                                 ("192.168.1.9", "https", "http"), ("127.0.0.1", "", "http"),
                                 ("127.0.0.1", "gopher", "http"), ("not-an-ip", "https", "http")]:
        environ = {"REMOTE_ADDR": peer, "wsgi.url_scheme": "http"}
        if header:
            environ["HTTP_X_FORWARDED_PROTO"] = header
        wrapped(environ, lambda *a: None)
        assert seen["scheme"] == scheme, (peer, header)
