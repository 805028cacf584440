"""One typed settings object built from ``CCTV_*`` environment variables.

Every service reads its configuration through :func:`load_settings`. Values are validated at
start; a bad value raises :class:`SettingsError` whose message names the variable, so a
misconfigured container fails fast with one clear line instead of a traceback later.

Sensitive values (camera tokens, viewer credentials) can come from files: for a variable
``CCTV_X`` the value of ``CCTV_X_FILE`` (for example ``/run/secrets/cctv_cameras``) is read
instead, which is how Docker secrets are mounted.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cctv.core.jpeg import FrameLimits
from cctv.core.wire import CAMERA_NAME_RE  # noqa: F401 - the services import it from here


class SettingsError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """All configuration of every cctv service. Field ``x`` is read from ``CCTV_X``."""

    # --- shared ---
    redis_url: str = "redis://127.0.0.1:6379/0"
    node: str = field(default_factory=socket.gethostname)
    log_level: str = "INFO"
    log_json: bool = True

    # --- cameras and ingest ---
    # "cam1:token1,cam2:token2" (or a file with one "cam:token" per line via CCTV_CAMERAS_FILE)
    cameras: str = ""
    # strict: only cameras in the registry may send (unknown -> 404)
    cameras_strict: bool = True
    # token accepted for cameras not in the registry when not strict
    ingest_token: str = ""
    # a frame's upper bound in bytes (413 above it); docs/configuration.md says why 2 MiB
    max_frame_bytes: int = 2 * 1024 * 1024
    camera_fps_limit: float = 30.0
    # frames kept per camera stream; evictions of unread frames are counted
    frames_maxlen: int = 300
    dedup_ttl_s: int = 900
    ingest_bind: str = "0.0.0.0:8080"
    ingest_workers: int = 2
    ingest_threads: int = 8

    # --- inference ---
    model: str = ""
    device: str = "auto"
    # auto or a backend key of inference/backends/ (openvino, ultralytics, ...)
    inference_backend: str = "auto"
    imgsz: int = 640
    conf: float = 0.25
    iou: float = 0.7
    classes: tuple[int, ...] = ()
    max_frame_age_s: float = 2.0
    det_maxlen: int = 2000
    lease_ttl_ms: int = 1000
    worker_id: str = ""
    role: str = "auto"
    heartbeat_s: float = 1.0
    # /healthz, /readyz and /metrics of an inference replica
    inference_http_bind: str = "0.0.0.0:9100"

    # --- web ---
    web_bind: str = "0.0.0.0:8000"
    web_threads: int = 64
    mjpeg_quality: int = 80
    viewer_idle_s: float = 10.0

    # --- events ---
    # tracker in the inference leader: auto (= bytetrack), bytetrack, botsort (BoT-SORT's motion
    # model) or none; numpy + lap, no torch (every inference image has them)
    tracker: str = "auto"
    # processed frames a lost track is kept for (ByteTrack's track_buffer)
    track_buffer: int = 30
    # tracker state saved to Redis every N processed frames (ids survive a failover)
    track_state_every: int = 3
    # zones, rules, webhooks: a YAML or JSON file read by `cctv events` (docs/events.md)
    events_config: str = ""
    # snapshots and crops (a volume in production)
    events_dir: str = "/var/lib/cctv/events"
    events_maxlen: int = 10000
    events_retention_days: float = 7.0
    events_max_bytes: int = 2 * 1024**3
    events_max_count: int = 100000
    events_retention_interval_s: float = 60.0
    # /healthz, /readyz and /metrics of the events service
    events_http_bind: str = "0.0.0.0:9200"
    # HMAC key that signs webhook payloads (CCTV_WEBHOOK_SECRET_FILE for a Docker secret)
    webhook_secret: str = ""

    # --- web viewer and dashboard ---
    # viewer accounts: "user:<hash>" lines (hash from `cctv hash-password`); a Docker secret via
    # CCTV_VIEWERS_FILE=/run/secrets/cctv_viewers. The web refuses to start without one.
    viewers: str = ""
    # signs session cookies; unset = random per process (sessions end when web restarts)
    web_secret_key: str = ""
    # a login lasts this long (absolute, from the login)
    web_session_hours: float = 12.0
    # mark the session cookie Secure (set it when web is served over HTTPS)
    web_cookie_secure: bool = False
    # when set, /metrics of every service needs "Authorization: Bearer <token>"
    metrics_token: str = ""
    # a camera with no frame for this long is shown as silent
    camera_silent_s: float = 5.0
    # an SSE connection is closed after this long (the browser reconnects by itself)
    web_sse_max_s: float = 300.0

    # --- slow clients, connection caps and the Redis memory bound ---
    # the nginx proxy in front of ingest and web: a client must send its headers, and then each
    # part of its body, within this many seconds (408 otherwise)
    proxy_client_timeout_s: float = 10.0
    # addresses (CIDRs) whose X-Real-IP header names the client (the proxy); others are the client
    trusted_proxies: str = "127.0.0.1/32,::1/128"
    # ingest: after this many failed tokens from one client address within the window, that
    # address gets 429 + Retry-After until the window has room again (per ingest process)
    ingest_auth_fail_limit: int = 20
    ingest_auth_fail_window_s: float = 60.0
    # web: open MJPEG viewers in total and per camera, and open event streams (503 beyond)
    web_max_viewers: int = 32
    web_max_viewers_per_camera: int = 16
    web_max_sse_clients: int = 16
    # an MJPEG stream is ended after this long (the viewer page reconnects by itself)
    web_mjpeg_max_s: float = 1800.0
    # the live view shows raw frames ("detection paused") when the newest frame is this much
    # (or twice the usual lag of results, if more) newer than the frame of the last result, and
    # annotated frames again with the next result
    web_detection_paused_s: float = 0.8
    # ingest and web also answer /healthz and /readyz on this address, from a thread of their
    # own: a probe there is answered while every request thread is busy (empty = off; the
    # stack's health checks use it)
    ingest_health_bind: str = ""
    web_health_bind: str = ""
    # the memory check at start assumes at most this many cameras when CCTV_CAMERAS_STRICT is
    # false (with a strict registry it counts the registry)
    max_cameras: int = 16

    # --- web login hardening ---
    # password hashes (deliberately slow) run at most this many at a time; a login or Basic
    # check beyond it is answered 503 with Retry-After instead of queueing up CPU
    web_hash_concurrency: int = 2
    # failed logins allowed per user name and minute, from any address (on top of the
    # per-address throttle): guessing one account's password from many addresses is throttled
    web_user_failures_per_minute: int = 10

    # --- untrusted input: frames every service refuses to decode ---
    # largest frame accepted (checked from the JPEG frame header by ingest and by every decoder)
    max_frame_width: int = 8192
    max_frame_height: int = 8192
    max_frame_pixels: int = 16 * 1024 * 1024
    # the leader claims frames pending (read, not acked) longer than this, on a timer: frames
    # read by a replica that had already lost the lease are processed or counted, not stranded
    pending_claim_idle_s: float = 5.0

    # --- replicated Redis: Sentinel, ACL users, acknowledged writes on replicas ---
    # Sentinels to ask for the primary ("host:port,host:port,..."); empty = CCTV_REDIS_URL
    redis_sentinels: str = ""
    # the name the Sentinels monitor the primary under
    redis_master_name: str = "cctv"
    # this service's ACL user and its password (CCTV_REDIS_PASSWORD_FILE for a Docker secret);
    # empty = no AUTH (the default user)
    redis_username: str = ""
    redis_password: str = ""
    # password of the Sentinels themselves, when they require one
    redis_sentinel_password: str = ""
    # replicas that must hold a frame (and a new lease epoch, an event) before it is
    # acknowledged: 0 = off (one Redis), 1 in the replicated stack
    redis_min_replicas_ack: int = 0
    # how long a write waits for that (WAIT's timeout); past it ingest answers 503
    redis_wait_timeout_ms: int = 200

    # --- swarmwatch: the only holder of the Docker socket ---
    # the manager's Docker Engine API socket, read by `cctv swarmwatch` (never by web)
    swarmwatch_socket: str = "/var/run/docker.sock"
    # how often the swarm snapshot is read and published to Redis
    swarmwatch_interval_s: float = 1.0

    @property
    def frame_limits(self) -> FrameLimits:
        """The largest frame accepted, for :func:`cctv.core.jpeg.jpeg_info`."""
        return FrameLimits(self.max_frame_width, self.max_frame_height, self.max_frame_pixels)

    @property
    def camera_tokens(self) -> dict[str, str]:
        """The camera registry parsed from ``cameras``: camera name -> token."""
        return parse_cameras(self.cameras, "CCTV_CAMERAS")

    @property
    def viewer_hashes(self) -> dict[str, str]:
        """The viewer accounts parsed from ``viewers``: user name -> password hash."""
        return parse_viewers(self.viewers, "CCTV_VIEWERS")


_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off"}


def _env_name(field_name: str) -> str:
    return "CCTV_" + field_name.upper()


def parse_cameras(raw: str, var: str) -> dict[str, str]:
    """Parse ``cam:token`` pairs separated by commas or newlines into a dict."""
    out: dict[str, str] = {}
    for item in re.split(r"[,\n]", raw):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, token = item.partition(":")
        name, token = name.strip(), token.strip()
        if not sep or not token:
            raise SettingsError(f"{var}: entry {name!r} must be written camera:token")
        if not CAMERA_NAME_RE.fullmatch(name):
            raise SettingsError(f"{var}: camera name {name!r} must match {CAMERA_NAME_RE.pattern}")
        out[name] = token
    return out


# --- web viewer and dashboard ---
VIEWER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
PASSWORD_HASH_METHODS = ("scrypt:", "pbkdf2:")


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


def _convert(name: str, raw: str, target: object, default: object) -> object:
    var = _env_name(name)
    try:
        if isinstance(default, bool):
            low = raw.strip().lower()
            if low in _BOOL_TRUE:
                return True
            if low in _BOOL_FALSE:
                return False
            raise ValueError("expected true/false")
        if isinstance(default, int):
            return int(raw.strip())
        if isinstance(default, float):
            return float(raw.strip())
        if isinstance(default, tuple):
            return tuple(int(x) for x in raw.replace(" ", "").split(",") if x)
        return raw
    except ValueError as exc:
        raise SettingsError(f"{var}={raw!r} is not valid: {exc}") from None


def _read_raw(name: str, env: Mapping[str, str]) -> str | None:
    var = _env_name(name)
    file_var = var + "_FILE"
    if env.get(file_var):
        path = Path(env[file_var])
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{file_var}: cannot read {path}: {exc.strerror}") from None
    return env.get(var)


def _validate(s: Settings) -> None:
    def bad(name: str, why: str) -> SettingsError:
        return SettingsError(f"{_env_name(name)}={getattr(s, name)!r} is not valid: {why}")

    if not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise bad("redis_url", "must start with redis://, rediss:// or unix://")
    if s.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise bad("log_level", "use DEBUG, INFO, WARNING or ERROR")
    positive = ("max_frame_bytes", "frames_maxlen", "dedup_ttl_s", "ingest_workers",
                "ingest_threads", "imgsz", "det_maxlen", "lease_ttl_ms", "web_threads")
    for name in positive:
        if getattr(s, name) <= 0:
            raise bad(name, "must be > 0")
    for name in ("camera_fps_limit", "max_frame_age_s", "heartbeat_s", "viewer_idle_s"):
        if getattr(s, name) <= 0:
            raise bad(name, "must be > 0")
    # --- web viewer and dashboard ---
    for name in ("web_session_hours", "camera_silent_s", "web_sse_max_s"):
        if getattr(s, name) <= 0:
            raise bad(name, "must be > 0")
    # --- web login hardening ---
    for name in ("web_hash_concurrency", "web_user_failures_per_minute"):
        if getattr(s, name) <= 0:
            raise bad(name, "must be > 0")
    if s.web_secret_key and len(s.web_secret_key) < 16:
        raise SettingsError("CCTV_WEB_SECRET_KEY is too short: use at least 16 characters "
                            "(e.g. openssl rand -hex 32)")  # never echo a secret
    s.viewer_hashes  # noqa: B018 - parses and raises on malformed accounts
    if s.frames_maxlen < 10:
        raise bad("frames_maxlen", "must be >= 10 so viewers and take-over find recent frames")
    if s.lease_ttl_ms < 100:
        raise bad("lease_ttl_ms", "must be >= 100")
    if not 0.0 < s.conf < 1.0:
        raise bad("conf", "must be between 0 and 1")
    if not 0.0 < s.iou < 1.0:
        raise bad("iou", "must be between 0 and 1")
    if s.imgsz % 32:
        raise bad("imgsz", "must be a multiple of 32")
    if s.role not in {"auto", "standby"}:
        raise bad("role", "use auto (lead when the lease is free) or standby (never lead)")
    if not (s.device in {"auto", "cpu"} or re.fullmatch(r"(cuda:)?\d+", s.device)):
        raise bad("device", "use auto, cpu, 0 or cuda:0")
    if not 1 <= s.mjpeg_quality <= 100:
        raise bad("mjpeg_quality", "must be 1..100")
    for name in ("ingest_bind", "web_bind", "inference_http_bind"):
        host, sep, port = getattr(s, name).rpartition(":")
        if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise bad(name, "use host:port")
    _validate_redis_ha(s, bad)
    _validate_events(s, bad)
    _validate_limits(s, bad)
    _validate_untrusted_input(s, bad)
    s.camera_tokens  # noqa: B018 - parses and raises on a malformed registry


def _validate_limits(s: Settings, bad) -> None:
    """The slow-client, connection-cap and memory settings."""
    for name in ("proxy_client_timeout_s", "ingest_auth_fail_window_s", "web_mjpeg_max_s",
                 "web_detection_paused_s"):
        if getattr(s, name) <= 0:
            raise bad(name, "must be > 0")
    for name in ("ingest_auth_fail_limit", "web_max_viewers", "web_max_viewers_per_camera",
                 "web_max_sse_clients", "max_cameras"):
        if getattr(s, name) <= 0:
            raise bad(name, "must be > 0")
    if s.web_max_viewers + s.web_max_sse_clients >= s.web_threads:
        raise SettingsError(
            f"CCTV_WEB_MAX_VIEWERS ({s.web_max_viewers}) + CCTV_WEB_MAX_SSE_CLIENTS "
            f"({s.web_max_sse_clients}) must be below CCTV_WEB_THREADS ({s.web_threads}): "
            "each open stream holds a thread, and pages and /healthz need free ones")
    trusted_networks(s.trusted_proxies)
    for name in ("ingest_health_bind", "web_health_bind"):
        value = getattr(s, name)
        host, sep, port = value.rpartition(":")
        if value and (not sep or not port.isdigit() or not 0 < int(port) < 65536):
            raise bad(name, "use host:port, or leave it empty")


def trusted_networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Parse CCTV_TRUSTED_PROXIES (comma-separated addresses or CIDRs)."""
    try:
        return tuple(ipaddress.ip_network(x.strip(), strict=False)
                     for x in raw.split(",") if x.strip())
    except ValueError as exc:
        raise SettingsError(f"CCTV_TRUSTED_PROXIES={raw!r} is not valid: {exc}") from None


def parse_sentinels(raw: str) -> tuple[tuple[str, int], ...]:
    """CCTV_REDIS_SENTINELS ``host:port,host:port`` -> ((host, port), ...); raises ValueError
    on a bad item."""
    out = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not host:port")
        out.append((host.strip("[]"), int(port)))
    return tuple(out)


def _validate_redis_ha(s: Settings, bad) -> None:
    """The Sentinel, ACL user and replica-acknowledgement settings."""
    try:
        parse_sentinels(s.redis_sentinels)
    except ValueError as exc:
        raise bad("redis_sentinels", f"{exc}; use host:port,host:port,...") from None
    if s.redis_sentinels and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", s.redis_master_name):
        raise bad("redis_master_name", "use letters, digits, _ . -")
    if s.redis_password and not s.redis_username:
        raise SettingsError("CCTV_REDIS_PASSWORD is set but CCTV_REDIS_USERNAME is not: name "
                            "the service's ACL user")  # never echo a secret
    if not 0 <= s.redis_min_replicas_ack <= 8:
        raise bad("redis_min_replicas_ack", "must be 0..8")
    if not 1 <= s.redis_wait_timeout_ms <= 10000:
        raise bad("redis_wait_timeout_ms", "must be 1..10000")


def _validate_events(s: Settings, bad) -> None:
    """The events settings; the rules file itself is checked by ``cctv events``."""
    if s.tracker not in {"auto", "bytetrack", "botsort", "none"}:
        raise bad("tracker", "use auto, bytetrack, botsort or none")
    for name in ("track_buffer", "track_state_every", "events_maxlen", "events_max_bytes",
                 "events_max_count"):
        if getattr(s, name) <= 0:
            raise bad(name, "must be > 0")
    for name in ("events_retention_days", "events_retention_interval_s"):
        if getattr(s, name) <= 0:
            raise bad(name, "must be > 0")
    host, sep, port = s.events_http_bind.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise bad("events_http_bind", "use host:port")


def _validate_untrusted_input(s: Settings, bad) -> None:
    """The frame limits: positive, and below what OpenCV refuses to decode (2**20 per side,
    2**30 pixels), so a frame that passes the header check never reaches OpenCV's own refusal."""
    for name in ("max_frame_width", "max_frame_height"):
        if not 0 < getattr(s, name) <= 65535:
            raise bad(name, "must be 1..65535")
    if not 0 < s.max_frame_pixels < 2**30:
        raise bad("max_frame_pixels", "must be 1..1073741823")
    if s.pending_claim_idle_s <= 0:
        raise bad("pending_claim_idle_s", "must be > 0")
    # --- swarmwatch ---
    if s.swarmwatch_interval_s <= 0:
        raise bad("swarmwatch_interval_s", "must be > 0")


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build and validate :class:`Settings` from ``env`` (default ``os.environ``).

    Keyword ``overrides`` win over the environment (used by the CLI's flags).
    Raises :class:`SettingsError` naming the first bad variable.
    """
    env = os.environ if env is None else env
    defaults = Settings()
    values: dict[str, object] = {}
    for f in dataclasses.fields(Settings):
        raw = _read_raw(f.name, env)
        if raw is not None and raw != "":
            values[f.name] = _convert(f.name, raw, f.type, getattr(defaults, f.name))
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(
        k for k in env if k.startswith("CCTV_") and k.removesuffix("_FILE")[5:].lower() not in known
        and k not in _NON_SETTINGS_VARS and not k.startswith(_NON_SETTINGS_PREFIXES)
    )
    if unknown:
        raise SettingsError(
            f"{unknown[0]} is not a known setting (typo?); see docs/configuration.md"
        )
    settings = Settings(**values)
    _validate(settings)
    return settings


# CCTV_* variables that belong to the tooling, not to the services.
_NON_SETTINGS_VARS = {"CCTV_SHARED", "CCTV_TEST_ARTIFACTS", "CCTV_KEEP_TMP", "CCTV_BENCH_QUICK"}
# The Pi sender (pi/) and the swarm tooling (stack/) keep their own variables.
_NON_SETTINGS_PREFIXES = ("CCTV_SENDER_", "CCTV_STACK_", "CCTV_TESTBED_", "CCTV_BENCH_")
