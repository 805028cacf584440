"""Web sessions and login hardening with the real web app (Flask's test client) and a real
redis-server: logout revokes every copy of a session cookie, forged or wrong-key cookies are
refused, password hashes are bounded (503 + Retry-After), failed logins are throttled per
user name from any address."""

from __future__ import annotations

import base64
import re

import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from cctv.core import keys
from cctv.settings import load_settings

from support import VIEWER_PASSWORD, VIEWER_USER, viewer_account

SECRET = "s" * 32


@pytest.fixture()
def app(redis_server, rdb):
    from cctv.web.app import create_app

    settings = load_settings({"CCTV_VIEWERS": viewer_account(), "CCTV_REDIS_URL": redis_server.url,
                              "CCTV_WEB_SECRET_KEY": SECRET,
                              "CCTV_WEB_HASH_CONCURRENCY": "1",
                              "CCTV_WEB_USER_FAILURES_PER_MINUTE": "5"})
    return create_app(settings, background=False)


def _client(app, addr: str = "10.0.0.1"):
    """A test client whose requests come from ``addr``."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = addr
    return client


def _csrf(client) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)


def _login(client, password: str = VIEWER_PASSWORD, user: str = VIEWER_USER):
    return client.post("/login", data={"user": user, "password": password,
                                       "csrf": _csrf(client)})


def _cookie(client) -> str:
    return client.get_cookie("cctv_session").value


def _with_cookie(app, value: str, addr: str = "10.0.0.2"):
    other = _client(app, addr)
    other.set_cookie("cctv_session", value)
    return other


def test_logout_revokes_a_copied_cookie(app, rdb) -> None:
    a = _client(app)
    assert _login(a).status_code == 302
    copied = _cookie(a)
    b = _with_cookie(app, copied)
    assert b.get("/api/v1/me").status_code == 200, "the copy works while the session lives"
    assert len(list(rdb.scan_iter(keys.web_session("*")))) == 1
    csrf = re.search(r'name="csrf" value="([^"]+)"', a.get("/").text).group(1)
    assert a.post("/logout", data={"csrf": csrf}).status_code == 302
    assert a.get("/api/v1/me").status_code == 401
    assert b.get("/api/v1/me").status_code == 401, "a copied cookie outlived the logout"
    assert not list(rdb.scan_iter(keys.web_session("*")))
    # logging in again gives a new session; the old cookie stays dead
    assert _login(a).status_code == 302
    assert _cookie(a) != copied
    assert _with_cookie(app, copied, "10.0.0.3").get("/api/v1/me").status_code == 401


def test_forged_and_wrong_key_cookies_are_refused(app, rdb) -> None:
    a = _client(app)
    assert _login(a).status_code == 302
    good = _cookie(a)
    data = SecureCookieSessionInterface().get_signing_serializer(app).loads(good)
    assert data["sid"] and data["user"] == VIEWER_USER

    def signed_with(key: str, payload: dict) -> str:
        other = Flask("forger")
        other.secret_key = key
        return SecureCookieSessionInterface().get_signing_serializer(other).dumps(payload)

    # the same session signed with another key
    assert _with_cookie(app, signed_with("x" * 32, data)).get("/api/v1/me").status_code == 401
    # the signature altered
    flip = "A" if good[-2] != "A" else "B"
    assert _with_cookie(app, good[:-2] + flip + good[-1]).get("/api/v1/me").status_code == 401
    # another user's name under a signature made for the original payload
    _payload, _, sig = good.rpartition(".")
    other = signed_with(SECRET, {**data, "user": "admin"}).rpartition(".")[0]
    assert _with_cookie(app, other + "." + sig).get("/api/v1/me").status_code == 401
    # even with the real key (leaked), a session id the server never issued is refused
    forged = signed_with(SECRET, {**data, "sid": "made-up-session-id"})
    assert _with_cookie(app, forged).get("/api/v1/me").status_code == 401
    assert _with_cookie(app, good).get("/api/v1/me").status_code == 200


def test_password_hashes_are_bounded(app) -> None:
    accounts = app.extensions["cctv_accounts"]
    c = _client(app)
    csrf = _csrf(c)
    basic = {"Authorization": "Basic " + base64.b64encode(
        f"{VIEWER_USER}:{VIEWER_PASSWORD}".encode()).decode()}
    assert accounts._hash_slots.acquire(timeout=5)  # the one hash slot is busy
    try:
        r = c.post("/login", data={"user": VIEWER_USER, "password": VIEWER_PASSWORD,
                                   "csrf": csrf})
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
        r = _client(app, "10.0.0.9").get("/api/v1/me", headers=basic)
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
        assert r.json["error"] == "busy"
    finally:
        accounts._hash_slots.release()
    assert c.post("/login", data={"user": VIEWER_USER, "password": VIEWER_PASSWORD,
                                  "csrf": csrf}).status_code == 302
    assert _client(app, "10.0.0.9").get("/api/v1/me", headers=basic).status_code == 200


def test_failed_logins_are_throttled_per_user_from_any_address(app) -> None:
    # five failures for one user name, each from another address (the per-address throttle
    # allows ten per address)
    for i in range(5):
        assert _login(_client(app, f"10.1.0.{i}"), "wrong").status_code == 401
    fresh = _client(app, "10.1.1.1")
    r = _login(fresh)
    assert r.status_code == 429, "the right password is refused while the user is throttled"
    basic = {"Authorization": "Basic " + base64.b64encode(
        f"{VIEWER_USER}:{VIEWER_PASSWORD}".encode()).decode()}
    assert _client(app, "10.1.1.2").get("/api/v1/me", headers=basic).status_code == 429
    # another user name from the same fresh address is not throttled (just wrong)
    assert _login(fresh, "wrong", user="someone-else").status_code == 401
