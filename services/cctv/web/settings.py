"""The web service's settings section: its gunicorn, viewer accounts and sessions, stream caps.

It extends the events section: web shows the events (their media folder, the rules file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cctv.core.settings import Bad, SettingsError, require_bind, require_positive
from cctv.events.settings import EventsSettings

VIEWER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
PASSWORD_HASH_METHODS = ("scrypt:", "pbkdf2:")


@dataclass(frozen=True)
class WebSettings(EventsSettings):
    """What ``cctv web`` reads besides :class:`CoreSettings` and the events section. Field ``x``
    is read from ``CCTV_X``."""

    web_bind: str = "0.0.0.0:8000"
    web_threads: int = 64
    mjpeg_quality: int = 80
    viewer_idle_s: float = 10.0

    # --- viewer accounts and sessions ---
    # "user:<hash>" lines (hash from `cctv hash-password`); a Docker secret via
    # CCTV_VIEWERS_FILE=/run/secrets/cctv_viewers. The web refuses to start without one.
    viewers: str = ""
    # signs session cookies; unset = random per process (sessions end when web restarts)
    web_secret_key: str = ""
    # opens the admin API (/api/v1/admin: the camera registry) to `Authorization: Bearer
    # <token>`; unset = no admin API. A Docker secret via CCTV_ADMIN_TOKEN_FILE
    admin_token: str = ""
    # a login lasts this long (absolute, from the login)
    web_session_hours: float = 12.0
    # mark the session cookie Secure (set it when web is served over HTTPS)
    web_cookie_secure: bool = False
    # password hashes (deliberately slow) run at most this many at a time; a login or Basic
    # check beyond it is answered 503 with Retry-After instead of queueing up CPU
    web_hash_concurrency: int = 2
    # failed logins allowed per user name and minute, from any address (on top of the
    # per-address throttle): guessing one account's password from many addresses is throttled
    web_user_failures_per_minute: int = 10

    # --- the dashboard and its streams ---
    # a camera with no frame for this long is shown as silent
    camera_silent_s: float = 5.0
    # an SSE connection is closed after this long (the browser reconnects by itself)
    web_sse_max_s: float = 300.0
    # open MJPEG viewers in total and per camera, and open event streams (503 beyond)
    web_max_viewers: int = 32
    web_max_viewers_per_camera: int = 16
    web_max_sse_clients: int = 16
    # an MJPEG stream is ended after this long (the viewer page reconnects by itself)
    web_mjpeg_max_s: float = 1800.0
    # the live view shows raw frames ("detection paused") when the newest frame is this much
    # (or twice the usual lag of results, if more) newer than the frame of the last result, and
    # annotated frames again with the next result
    web_detection_paused_s: float = 0.8
    # also answer /healthz and /readyz on this address, from a thread of its own: a probe there
    # is answered while every request thread is busy (empty = off; the stack's health checks
    # use it)
    web_health_bind: str = ""

    @property
    def viewer_hashes(self) -> dict[str, str]:
        """The viewer accounts parsed from ``viewers``: user name -> password hash."""
        return parse_viewers(self.viewers, "CCTV_VIEWERS")

    def _validate_section(self, bad: Bad) -> None:
        """Check the fields of this section."""
        require_positive(self, bad, "web_threads", "viewer_idle_s", "web_session_hours",
                         "camera_silent_s", "web_sse_max_s", "web_hash_concurrency",
                         "web_user_failures_per_minute", "web_mjpeg_max_s",
                         "web_detection_paused_s", "web_max_viewers",
                         "web_max_viewers_per_camera", "web_max_sse_clients")
        if self.web_secret_key and len(self.web_secret_key) < 16:
            raise SettingsError("CCTV_WEB_SECRET_KEY is too short: use at least 16 characters "
                                "(e.g. openssl rand -hex 32)")  # never echo a secret
        if self.admin_token and len(self.admin_token) < 20:
            raise SettingsError("CCTV_ADMIN_TOKEN is too short: use at least 20 characters "
                                "(`cctv token` makes one)")
        self.viewer_hashes  # noqa: B018 - parses and raises on malformed accounts
        if not 1 <= self.mjpeg_quality <= 100:
            raise bad("mjpeg_quality", "must be 1..100")
        require_bind(self, bad, "web_bind")
        if self.web_max_viewers + self.web_max_sse_clients >= self.web_threads:
            raise SettingsError(
                f"CCTV_WEB_MAX_VIEWERS ({self.web_max_viewers}) + CCTV_WEB_MAX_SSE_CLIENTS "
                f"({self.web_max_sse_clients}) must be below CCTV_WEB_THREADS "
                f"({self.web_threads}): each open stream holds a thread, and pages and /healthz "
                "need free ones")
        require_bind(self, bad, "web_health_bind", optional=True)


def parse_viewers(raw: str, var: str) -> dict[str, str]:
    """Parse ``user:<password hash>`` lines (or comma separated) into a dict.

    Only hashes made by werkzeug (``cctv hash-password``: scrypt or pbkdf2) are accepted, so a
    plain password in the secret is refused at start instead of silently working.
    """
    out: dict[str, str] = {}
    for item in re.split(r"[,\n]", raw):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, pw_hash = item.partition(":")
        name, pw_hash = name.strip(), pw_hash.strip()
        if not sep or not pw_hash:
            raise SettingsError(f"{var}: entry {name!r} must be written user:<password hash>")
        if not VIEWER_NAME_RE.fullmatch(name):
            raise SettingsError(f"{var}: user name {name!r} must match {VIEWER_NAME_RE.pattern}")
        if not pw_hash.startswith(PASSWORD_HASH_METHODS) or pw_hash.count("$") != 2:
            raise SettingsError(f"{var}: the password of {name!r} is not a hash; make one with "
                                "`cctv hash-password`")
        out[name] = pw_hash
    return out
