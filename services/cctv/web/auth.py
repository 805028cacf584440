"""Login for the viewer, the dashboard and the API.

* Browsers log in with a form (``/login``) and get a signed session cookie (HttpOnly,
  SameSite=Lax, Secure by setting) that names a server-side session (``cctv:web:session:<id>``
  in Redis). It ends ``CCTV_WEB_SESSION_HOURS`` after the login, when the user's password
  changes, or at logout, which deletes the server-side session: a copy of the cookie is then
  worthless too. The login and logout forms carry a CSRF token bound to the session; any other
  unsafe request authenticated by the cookie needs it too.
* Other clients (ffmpeg, VLC, scripts, curl) send HTTP Basic with the same credentials.
  A successful check is remembered for a few minutes under a digest, so the (deliberately slow)
  password hash runs once per client, not on every request.
* One global check (``before_request``) protects every route, including blueprints registered
  later; only the login page, static files, /healthz, /readyz and /metrics (which has its own
  optional token) are open.
* Failed logins are throttled per client address and per user name (an account attacked from
  many addresses). Password hashes run at most ``CCTV_WEB_HASH_CONCURRENCY`` at a time; a check
  beyond that is answered 503 with Retry-After rather than queueing up CPU.

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

import redis
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
from prometheus_client import Counter
from werkzeug.security import check_password_hash, generate_password_hash

from cctv.core import keys
from cctv.core.settings import SettingsError
from cctv.web.settings import WebSettings

log = logging.getLogger("cctv.web.auth")

#: endpoints anyone may call
#: every page's Content-Security-Policy: scripts and styles only from our own static files (no
#: inline script, event handler or style anywhere), no plugins, no framing, no <base>
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'")
PUBLIC_ENDPOINTS = frozenset({"auth.login", "static", "healthz", "readyz", "metrics"})
#: endpoints of the admin API: a bearer token of their own, never a viewer login
ADMIN_PREFIX = "admin."
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BASIC_CACHE_S = 300.0
FAILURES_ALLOWED = 10  # per client address and minute
MAX_FIELD = 1024
HASH_WAIT_S = 0.25  # how long a password check waits for a free hash slot
HASH_RETRY_AFTER_S = 2
PLAIN_LOGINS = Counter("cctv_web_plain_http_logins_refused_total",
                       "Logins refused because they came over plain HTTP while the session "
                       "cookie is Secure (CCTV_WEB_COOKIE_SECURE)")


class HashesBusy(Exception):
    """Every password-hash slot stayed taken: answer 503 with Retry-After."""


class Accounts:
    """The viewer accounts, password checks (with a cache for Basic, a bound on concurrent
    hashes) and failure throttling (per address and per user name)."""

    def __init__(self, hashes: dict[str, str], hash_concurrency: int = 2,
                 user_failures_per_minute: int = FAILURES_ALLOWED) -> None:
        self.hashes = hashes
        self._lock = threading.Lock()
        self._verified: dict[bytes, float] = {}
        self._failures: dict[str, deque[float]] = {}
        self._user_failures: dict[str, deque[float]] = {}
        self.user_failures_allowed = user_failures_per_minute
        self._hash_slots = threading.BoundedSemaphore(hash_concurrency)
        self._dummy: str | None = None

    def _check_hash(self, pw_hash: str, password: str) -> bool:
        """One (slow) hash check in a bounded slot; raises :class:`HashesBusy`."""
        if not self._hash_slots.acquire(timeout=HASH_WAIT_S):
            raise HashesBusy
        try:
            return check_password_hash(pw_hash, password)
        finally:
            self._hash_slots.release()

    def fingerprint(self, user: str) -> str | None:
        """A short digest of the user's current hash: sessions end when it changes."""
        pw_hash = self.hashes.get(user)
        return hashlib.sha256(pw_hash.encode()).hexdigest()[:16] if pw_hash else None

    def verify(self, user: str, password: str) -> bool:
        """True when ``password`` is ``user``'s (same time for unknown users). Raises
        :class:`HashesBusy` when no hash slot frees up in time."""
        pw_hash = self.hashes.get(user)
        if pw_hash is None:
            if self._dummy is None:
                self._dummy = generate_password_hash(secrets.token_hex(8))
            self._check_hash(self._dummy, password)  # no timing hint about user names
            return False
        key = hashlib.sha256(b"\0".join(s.encode() for s in (user, password, pw_hash))).digest()
        now = time.monotonic()
        with self._lock:
            if self._verified.get(key, 0.0) > now:
                return True
        if not self._check_hash(pw_hash, password):
            return False
        with self._lock:
            if len(self._verified) > 1000:
                self._verified = {k: v for k, v in self._verified.items() if v > now}
                if len(self._verified) > 1000:
                    self._verified.clear()
            self._verified[key] = now + BASIC_CACHE_S
        return True

    @staticmethod
    def _over(failures: dict[str, deque[float]], key: str, allowed: int) -> bool:
        now = time.monotonic()
        q = failures.get(key)
        if not q:
            return False
        while q and now - q[0] > 60:
            q.popleft()
        return len(q) >= allowed

    def throttled(self, addr: str, user: str = "") -> bool:
        """True when ``addr``, or (given) the user name ``user`` from any address, failed too
        often in the last minute."""
        with self._lock:
            return self._over(self._failures, addr, FAILURES_ALLOWED) or (
                bool(user) and self._over(self._user_failures, user,
                                          self.user_failures_allowed))

    def failed(self, addr: str, user: str = "") -> None:
        """Record a failed attempt from ``addr`` (for the user name ``user``, when given)."""
        now = time.monotonic()
        with self._lock:
            for failures, key, allowed in ((self._failures, addr, FAILURES_ALLOWED),
                                           (self._user_failures, user,
                                            self.user_failures_allowed)):
                if not key:
                    continue
                if len(failures) > 10000:
                    failures.clear()
                failures.setdefault(key, deque(maxlen=allowed * 2)).append(now)


def load_accounts(settings: WebSettings) -> Accounts:
    """The accounts of ``CCTV_VIEWERS``; refuses to run the viewer without one."""
    hashes = settings.viewer_hashes
    if not hashes:
        raise SettingsError(
            "CCTV_VIEWERS is empty: the viewer requires a login. Add user:<hash> lines "
            "(make a hash with `cctv hash-password`), e.g. CCTV_VIEWERS_FILE=/run/secrets/"
            "cctv_viewers")
    return Accounts(hashes, settings.web_hash_concurrency, settings.web_user_failures_per_minute)


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


def install_auth(app: Flask, settings: WebSettings, accounts: Accounts, client: redis.Redis
                 ) -> None:
    """Session settings, the global login check, security headers and /login, /logout.
    Server-side sessions live in Redis (``client``)."""
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
        user, login_at, sid = session.get("user"), session.get("login_at"), session.get("sid")
        if not isinstance(user, str) or not isinstance(login_at, (int, float)) or \
                not isinstance(sid, str) or not sid:
            return None
        if time.time() - login_at > lifetime_s or \
                session.get("fp") != accounts.fingerprint(user) or \
                client.get(keys.web_session(sid)) != user.encode():
            session.clear()  # expired, password changed, logged out (or never issued here)
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
        accounts.failed(_client_addr(), user)
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
        if status == 503:
            resp.headers["Retry-After"] = str(HASH_RETRY_AFTER_S)
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
        if (request.endpoint or "").startswith(ADMIN_PREFIX):
            return None  # the admin API checks its own bearer token (web/admin.py)
        user = session_user()
        if request.endpoint == "auth.logout" and user is None:
            return redirect(url_for("auth.login"))
        if user is not None:
            g.user, g.auth = user, "session"
            if request.method in UNSAFE_METHODS and not _csrf_ok():
                return refuse(403, "csrf", "missing or wrong CSRF token")
            return None
        auth = request.authorization
        if auth is not None and accounts.throttled(_client_addr(), (auth.username or "")[:64]):
            return refuse(429, "too_many_failures", "too many failed logins; wait a minute")
        try:
            user = basic_user()
        except HashesBusy:
            return refuse(503, "busy", "too many password checks at once; retry shortly")
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
        h.setdefault("Content-Security-Policy", CSP)
        if g.get("user") and not resp.headers.get("Cache-Control"):
            h["Cache-Control"] = "private, no-store"
        return resp

    app.register_blueprint(_login_blueprint(accounts, session_user, client, lifetime_s,
                                            settings.web_cookie_secure))


def _login_blueprint(accounts: Accounts, session_user: Callable[[], str | None],
                     client: redis.Redis, lifetime_s: float, secure_only: bool) -> Blueprint:
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
        if secure_only and not request.is_secure:
            # the browser would drop the Secure cookie: refuse instead of a silent login loop
            PLAIN_LOGINS.inc()
            log.warning("login over plain HTTP from %s refused (CCTV_WEB_COOKIE_SECURE is on: "
                        "open the viewer over https://)", addr, extra={"addr": addr})
            return page("Log in over HTTPS: open this page with https://.", 400, user)
        if accounts.throttled(addr, user):
            return page("Too many failed logins. Wait a minute and try again.", 429, user)
        if not _csrf_ok():
            return page("The form expired. Please try again.", 400, user)
        password = request.form.get("password", "")
        try:
            ok = bool(user) and len(password) <= MAX_FIELD and accounts.verify(user, password)
        except HashesBusy:
            body, status = page("The server is busy. Please try again in a moment.", 503, user)
            return Response(body, status, headers={"Retry-After": str(HASH_RETRY_AFTER_S)})
        if not ok:
            accounts.failed(addr, user)
            log.warning("failed login for %r from %s", user, addr,
                        extra={"user": user, "addr": addr})
            return page("Wrong user name or password.", 401, user)
        old_sid = session.get("sid")
        if isinstance(old_sid, str) and old_sid:
            client.delete(keys.web_session(old_sid))
        session.clear()
        session.permanent = True
        sid = secrets.token_urlsafe(24)
        client.set(keys.web_session(sid), user, ex=max(1, int(lifetime_s)))
        session.update(user=user, login_at=time.time(), fp=accounts.fingerprint(user),
                       csrf=secrets.token_urlsafe(24), sid=sid)
        log.info("login: %s from %s", user, addr, extra={"user": user, "addr": addr})
        return redirect(_safe_next(request.form.get("next")))

    @bp.post("/logout")
    def logout() -> Response:
        sid = session.get("sid")
        if isinstance(sid, str) and sid:
            client.delete(keys.web_session(sid))  # every copy of this cookie ends here
        session.clear()
        return redirect(url_for("auth.login"))

    return bp
