"""Login for the viewer, the dashboard and the API.

* Browsers log in with a form (``/login``) and get a signed session cookie (HttpOnly,
  SameSite=Lax, Secure by setting) that ends ``CCTV_WEB_SESSION_HOURS`` after the login, or when
  the user's password changes. The login and logout forms carry a CSRF token bound to the
  session; any other unsafe request authenticated by the cookie needs it too.
* Other clients (ffmpeg, VLC, scripts, curl) send HTTP Basic with the same credentials.
  A successful check is remembered for a few minutes under a digest, so the (deliberately slow)
  password hash runs once per client, not on every request.
* One global check (``before_request``) protects every route, including blueprints registered
  later; only the login page, static files, /healthz, /readyz and /metrics (which has its own
  optional token) are open.
* Failed logins are throttled per client address.

Accounts are ``user:<hash>`` lines in ``CCTV_VIEWERS`` (a Docker secret); ``cctv
hash-password`` makes the hash.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.security import check_password_hash, generate_password_hash

from cctv.core.settings import Settings, SettingsError

log = logging.getLogger("cctv.web.auth")

#: endpoints anyone may call
PUBLIC_ENDPOINTS = frozenset({"auth.login", "static", "healthz", "readyz", "metrics"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BASIC_CACHE_S = 300.0
FAILURES_ALLOWED = 10  # per client address and minute
MAX_FIELD = 1024


class Accounts:
    """The viewer accounts, password checks (with a cache for Basic) and failure throttling."""

    def __init__(self, hashes: dict[str, str]) -> None:
        self.hashes = hashes
        self._lock = threading.Lock()
        self._verified: dict[bytes, float] = {}
        self._failures: dict[str, deque[float]] = {}
        self._dummy: str | None = None

    def fingerprint(self, user: str) -> str | None:
        """A short digest of the user's current hash: sessions end when it changes."""
        pw_hash = self.hashes.get(user)
        return hashlib.sha256(pw_hash.encode()).hexdigest()[:16] if pw_hash else None

    def verify(self, user: str, password: str) -> bool:
        """True when ``password`` is ``user``'s (same time for unknown users)."""
        pw_hash = self.hashes.get(user)
        if pw_hash is None:
            if self._dummy is None:
                self._dummy = generate_password_hash(secrets.token_hex(8))
            check_password_hash(self._dummy, password)  # no timing hint about user names
            return False
        key = hashlib.sha256(b"\0".join(s.encode() for s in (user, password, pw_hash))).digest()
        now = time.monotonic()
        with self._lock:
            if self._verified.get(key, 0.0) > now:
                return True
        if not check_password_hash(pw_hash, password):
            return False
        with self._lock:
            if len(self._verified) > 1000:
                self._verified = {k: v for k, v in self._verified.items() if v > now}
                if len(self._verified) > 1000:
                    self._verified.clear()
            self._verified[key] = now + BASIC_CACHE_S
        return True

    def throttled(self, addr: str) -> bool:
        """True when ``addr`` failed too often in the last minute."""
        now = time.monotonic()
        with self._lock:
            q = self._failures.get(addr)
            if not q:
                return False
            while q and now - q[0] > 60:
                q.popleft()
            return len(q) >= FAILURES_ALLOWED

    def failed(self, addr: str) -> None:
        """Record a failed attempt from ``addr``."""
        with self._lock:
            if len(self._failures) > 10000:
                self._failures.clear()
            self._failures.setdefault(addr, deque(maxlen=FAILURES_ALLOWED * 2)).append(
                time.monotonic())


def load_accounts(settings: Settings) -> Accounts:
    """The accounts of ``CCTV_VIEWERS``; refuses to run the viewer without one."""
    hashes = settings.viewer_hashes
    if not hashes:
        raise SettingsError(
            "CCTV_VIEWERS is empty: the viewer requires a login. Add user:<hash> lines "
            "(make a hash with `cctv hash-password`), e.g. CCTV_VIEWERS_FILE=/run/secrets/"
            "cctv_viewers")
    return Accounts(hashes)


def csrf_token() -> str:
    """This session's CSRF token (created on first use)."""
    token = session.get("csrf")
    if not isinstance(token, str) or len(token) < 20:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return token


def _csrf_ok() -> bool:
    given = request.form.get("csrf") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get("csrf")
    return (isinstance(expected, str) and bool(given)
            and hmac.compare_digest(given.encode(), expected.encode()))


def _safe_next(target: str | None) -> str:
    """Only local paths: never redirect a login to another site."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _client_addr() -> str:
    return request.remote_addr or "?"


def _wants_page() -> bool:
    return request.method == "GET" and not request.path.startswith(("/api/", "/video/"))


def install_auth(app: Flask, settings: Settings, accounts: Accounts) -> None:
    """Session settings, the global login check, security headers and /login, /logout."""
    lifetime_s = settings.web_session_hours * 3600
    if settings.web_secret_key:
        app.secret_key = settings.web_secret_key
    else:
        app.secret_key = secrets.token_bytes(32)
        log.warning("CCTV_WEB_SECRET_KEY is not set: using a random key for this process. "
                    "Logins end when web restarts and would not be shared between processes; "
                    "set CCTV_WEB_SECRET_KEY(_FILE) to keep them")
    app.config.update(
        SESSION_COOKIE_NAME="cctv_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.web_cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=lifetime_s),
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    app.jinja_env.globals["csrf_token"] = csrf_token

    def session_user() -> str | None:
        user, login_at = session.get("user"), session.get("login_at")
        if not isinstance(user, str) or not isinstance(login_at, (int, float)):
            return None
        if time.time() - login_at > lifetime_s or \
                session.get("fp") != accounts.fingerprint(user):
            session.clear()
            return None
        return user

    def basic_user() -> str | None:
        auth = request.authorization
        if auth is None or auth.type != "basic":
            return None
        user, password = auth.username or "", auth.password or ""
        if len(user) > MAX_FIELD or len(password) > MAX_FIELD:
            return None
        if accounts.verify(user, password):
            return user
        accounts.failed(_client_addr())
        return None

    def refuse(status: int = 401, code: str = "unauthorized",
               message: str = "log in (session cookie) or send HTTP Basic credentials"
               ) -> Response:
        if status == 401 and _wants_page() and request.authorization is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        resp = jsonify({"error": code, "message": message})
        resp.status_code = status
        # Non-browser clients (ffmpeg, VLC) need the challenge to send their credentials;
        # browsers (they send Sec-Fetch-*) would pop a native dialog, so they do not get it.
        if status == 401 and "Sec-Fetch-Mode" not in request.headers:
            resp.headers["WWW-Authenticate"] = 'Basic realm="cctv", charset="UTF-8"'
        if status == 429:
            resp.headers["Retry-After"] = "60"
        return resp

    @app.before_request
    def require_login() -> Response | None:
        g.user = None
        if request.method in UNSAFE_METHODS:
            origin = request.headers.get("Origin")
            if origin and origin != "null" and urlsplit(origin).netloc != request.host:
                return refuse(403, "forbidden", "cross-site request refused")
        if request.endpoint in PUBLIC_ENDPOINTS:
            g.user = session_user()
            return None
        user = session_user()
        if request.endpoint == "auth.logout" and user is None:
            return redirect(url_for("auth.login"))
        if user is not None:
            g.user, g.auth = user, "session"
            if request.method in UNSAFE_METHODS and not _csrf_ok():
                return refuse(403, "csrf", "missing or wrong CSRF token")
            return None
        if request.authorization is not None and accounts.throttled(_client_addr()):
            return refuse(429, "too_many_failures", "too many failed logins; wait a minute")
        user = basic_user()
        if user is not None:
            g.user, g.auth = user, "basic"
            return None
        return refuse()

    @app.after_request
    def security_headers(resp: Response) -> Response:
        h = resp.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "same-origin")
        h.setdefault("Content-Security-Policy",
                     "default-src 'self'; img-src 'self' data: blob:; "
                     "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
                     "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
                     "form-action 'self'")
        if g.get("user") and not resp.headers.get("Cache-Control"):
            h["Cache-Control"] = "private, no-store"
        return resp

    app.register_blueprint(_login_blueprint(accounts, session_user))


def _login_blueprint(accounts: Accounts, session_user: Callable[[], str | None]) -> Blueprint:
    bp = Blueprint("auth", __name__)

    def page(error: str | None, status: int, user: str = "") -> tuple[str, int]:
        return render_template("login.html", error=error, user=user,
                               next=_safe_next(request.values.get("next"))), status

    @bp.route("/login", methods=["GET", "POST"])
    def login() -> Response | tuple[str, int]:
        if request.method == "GET":
            if session_user():
                return redirect(_safe_next(request.args.get("next")))
            return page(None, 200)
        addr = _client_addr()
        user = request.form.get("user", "").strip()[:64]
        if accounts.throttled(addr):
            return page("Too many failed logins. Wait a minute and try again.", 429, user)
        if not _csrf_ok():
            return page("The form expired. Please try again.", 400, user)
        password = request.form.get("password", "")
        if not user or len(password) > MAX_FIELD or not accounts.verify(user, password):
            accounts.failed(addr)
            log.warning("failed login for %r from %s", user, addr,
                        extra={"user": user, "addr": addr})
            return page("Wrong user name or password.", 401, user)
        session.clear()
        session.permanent = True
        session.update(user=user, login_at=time.time(), fp=accounts.fingerprint(user),
                       csrf=secrets.token_urlsafe(24))
        log.info("login: %s from %s", user, addr, extra={"user": user, "addr": addr})
        return redirect(_safe_next(request.form.get("next")))

    @bp.post("/logout")
    def logout() -> Response:
        session.clear()
        return redirect(url_for("auth.login"))

    return bp
