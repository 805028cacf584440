"""The generic ``CCTV_*`` settings loader and the settings every service shares.

Each service package keeps its own settings section beside it (``ingest/settings.py``,
``inference/settings.py``, ...): a frozen dataclass extending :class:`CoreSettings` with that
service's fields and a ``_validate_section`` hook for them. :func:`load` builds any such class
from the environment: field ``x`` is read from ``CCTV_X``, converted by the type of its default,
and every section's validation runs. ``cctv.settings`` combines all sections into the one
``Settings`` the commands load. A bad value raises :class:`SettingsError` whose message names the
variable, so a misconfigured container fails fast with one clear line instead of a traceback
later.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cctv.core.jpeg import FrameLimits
from cctv.core.wire import CAMERA_NAME_RE  # noqa: F401 - the services import it from here


class SettingsError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


#: ``bad(field_name, why)`` -> the :class:`SettingsError` naming ``CCTV_<FIELD_NAME>`` and its value
Bad = Callable[[str, str], SettingsError]


@dataclass(frozen=True)
class CoreSettings:
    """The settings more than one service reads (and the core modules: the Redis connection,
    the memory bound, the token check). Field ``x`` is read from ``CCTV_X``."""

    # --- shared ---
    redis_url: str = "redis://127.0.0.1:6379/0"
    node: str = field(default_factory=socket.gethostname)
    log_level: str = "INFO"
    log_json: bool = True
    heartbeat_s: float = 1.0
    # when set, /metrics of every service needs "Authorization: Bearer <token>"
    metrics_token: str = ""

    # --- the camera registry ---
    # "cam1:token1,cam2:token2" (or a file with one "cam:token" per line via CCTV_CAMERAS_FILE):
    # seeds the registry in Redis (core/registry.py) at first start; `cctv cameras` changes it
    cameras: str = ""
    # strict: only cameras in the registry may send (unknown -> 404)
    cameras_strict: bool = True
    # token accepted for cameras not in the registry when not strict
    ingest_token: str = ""
    # token the capture service posts with (CCTV_CAPTURE_TOKEN_FILE: a Docker secret); ingest
    # accepts it for every registered camera that has a source URL
    capture_token: str = ""

    # --- frames and the stream lengths of the Redis memory bound ---
    # a frame's upper bound in bytes (413 above it); docs/configuration.md says why 2 MiB
    max_frame_bytes: int = 2 * 1024 * 1024
    camera_fps_limit: float = 30.0
    # frames kept per camera stream; evictions of unread frames are counted
    frames_maxlen: int = 300
    dedup_ttl_s: int = 900
    det_maxlen: int = 2000
    events_maxlen: int = 10000
    events_max_count: int = 100000
    # the memory check at start assumes at most this many cameras when CCTV_CAMERAS_STRICT is
    # false (with a strict registry it counts the registry)
    max_cameras: int = 16
    # the inference leadership lease (web shows it on the cluster page)
    lease_ttl_ms: int = 1000

    # --- the proxy in front of ingest and web ---
    # a client must send its headers, and then each part of its body, within this many seconds
    # (408 otherwise)
    proxy_client_timeout_s: float = 10.0
    # addresses (CIDRs) whose X-Real-IP header names the client (the proxy); others are the client
    trusted_proxies: str = "127.0.0.1/32,::1/128"

    # --- untrusted input: frames every service refuses to decode ---
    # largest frame accepted (checked from the JPEG frame header by ingest and by every decoder)
    max_frame_width: int = 8192
    max_frame_height: int = 8192
    max_frame_pixels: int = 16 * 1024 * 1024

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

    @property
    def frame_limits(self) -> FrameLimits:
        """The largest frame accepted, for :func:`cctv.core.jpeg.jpeg_info`."""
        return FrameLimits(self.max_frame_width, self.max_frame_height, self.max_frame_pixels)

    @property
    def camera_tokens(self) -> dict[str, str]:
        """The camera registry parsed from ``cameras``: camera name -> token."""
        return parse_cameras(self.cameras, "CCTV_CAMERAS")

    def _validate_section(self, bad: Bad) -> None:
        """Check this class's own fields (each section class has its own hook; :func:`validate`
        runs them all)."""
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise bad("redis_url", "must start with redis://, rediss:// or unix://")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise bad("log_level", "use DEBUG, INFO, WARNING or ERROR")
        require_positive(self, bad, "max_frame_bytes", "frames_maxlen", "dedup_ttl_s",
                         "det_maxlen", "lease_ttl_ms", "camera_fps_limit", "heartbeat_s",
                         "events_maxlen", "events_max_count", "proxy_client_timeout_s",
                         "max_cameras")
        if self.frames_maxlen < 10:
            raise bad("frames_maxlen", "must be >= 10 so viewers and take-over find recent frames")
        if self.lease_ttl_ms < 100:
            raise bad("lease_ttl_ms", "must be >= 100")
        trusted_networks(self.trusted_proxies)
        self._validate_redis_ha(bad)
        self._validate_untrusted_input(bad)
        self.camera_tokens  # noqa: B018 - parses and raises on a malformed registry

    def _validate_redis_ha(self, bad: Bad) -> None:
        """The Sentinel, ACL user and replica-acknowledgement settings."""
        try:
            parse_sentinels(self.redis_sentinels)
        except ValueError as exc:
            raise bad("redis_sentinels", f"{exc}; use host:port,host:port,...") from None
        if self.redis_sentinels and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}",
                                                     self.redis_master_name):
            raise bad("redis_master_name", "use letters, digits, _ . -")
        if self.redis_password and not self.redis_username:
            raise SettingsError("CCTV_REDIS_PASSWORD is set but CCTV_REDIS_USERNAME is not: name "
                                "the service's ACL user")  # never echo a secret
        if not 0 <= self.redis_min_replicas_ack <= 8:
            raise bad("redis_min_replicas_ack", "must be 0..8")
        if not 1 <= self.redis_wait_timeout_ms <= 10000:
            raise bad("redis_wait_timeout_ms", "must be 1..10000")

    def _validate_untrusted_input(self, bad: Bad) -> None:
        """The frame limits: positive, and below what OpenCV refuses to decode (2**20 per side,
        2**30 pixels), so a frame that passes the header check never reaches OpenCV's own
        refusal."""
        for name in ("max_frame_width", "max_frame_height"):
            if not 0 < getattr(self, name) <= 65535:
                raise bad(name, "must be 1..65535")
        if not 0 < self.max_frame_pixels < 2**30:
            raise bad("max_frame_pixels", "must be 1..1073741823")


# --- checks the sections share ---

def require_positive(s: object, bad: Bad, *names: str) -> None:
    """Raise ``bad(name, "must be > 0")`` for the first of ``names`` that is not above zero."""
    for name in names:
        if getattr(s, name) <= 0:
            raise bad(name, "must be > 0")


def require_bind(s: object, bad: Bad, name: str, *, optional: bool = False) -> None:
    """Raise ``bad`` unless field ``name`` is ``host:port`` (or empty, when ``optional``)."""
    value = getattr(s, name)
    host, sep, port = value.rpartition(":")
    if optional:
        if value and (not sep or not port.isdigit() or not 0 < int(port) < 65536):
            raise bad(name, "use host:port, or leave it empty")
    elif not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise bad(name, "use host:port")


# --- parsers ---

def env_name(field_name: str) -> str:
    """The environment variable of a settings field: ``x`` -> ``CCTV_X``."""
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


# --- the loader ---

_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off"}

# CCTV_* variables that belong to the tooling, not to the services.
_NON_SETTINGS_VARS = {"CCTV_SHARED", "CCTV_TEST_ARTIFACTS", "CCTV_KEEP_TMP", "CCTV_BENCH_QUICK"}
# The Pi sender (pi/) and the swarm tooling (stack/) keep their own variables.
_NON_SETTINGS_PREFIXES = ("CCTV_SENDER_", "CCTV_STACK_", "CCTV_TESTBED_", "CCTV_BENCH_")

S = TypeVar("S", bound=CoreSettings)


def _convert(name: str, raw: str, default: object) -> object:
    var = env_name(name)
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
    var = env_name(name)
    file_var = var + "_FILE"
    if env.get(file_var):
        path = Path(env[file_var])
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{file_var}: cannot read {path}: {exc.strerror}") from None
    return env.get(var)


def validate(settings: CoreSettings) -> None:
    """Run the ``_validate_section`` hook of every section class of ``settings`` (core first,
    then in the order its class inherits them); raises :class:`SettingsError`."""
    def bad(name: str, why: str) -> SettingsError:
        return SettingsError(f"{env_name(name)}={getattr(settings, name)!r} is not valid: {why}")

    for klass in reversed(type(settings).__mro__):
        hook = vars(klass).get("_validate_section")
        if hook is not None:
            hook(settings, bad)


def load(cls: type[S], env: Mapping[str, str] | None = None,
         overrides: Mapping[str, object] | None = None) -> S:
    """Build and validate settings class ``cls`` from ``env`` (default ``os.environ``).

    Every field ``x`` of ``cls`` is read from ``CCTV_X`` (or the file ``CCTV_X_FILE`` names) and
    converted by the type of its default; ``overrides`` that are not None win over the
    environment (the CLI's flags). A ``CCTV_*`` variable that names no field of ``cls`` (and is
    not the tooling's) is refused as a probable typo. Raises :class:`SettingsError` naming the
    first bad variable.
    """
    env = os.environ if env is None else env
    defaults = cls()
    fields = dataclasses.fields(cls)
    values: dict[str, object] = {}
    for f in fields:
        raw = _read_raw(f.name, env)
        if raw is not None and raw != "":
            values[f.name] = _convert(f.name, raw, getattr(defaults, f.name))
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    known = {f.name for f in fields}
    unknown = sorted(
        k for k in env if k.startswith("CCTV_") and k.removesuffix("_FILE")[5:].lower() not in known
        and k not in _NON_SETTINGS_VARS and not k.startswith(_NON_SETTINGS_PREFIXES)
    )
    if unknown:
        raise SettingsError(
            f"{unknown[0]} is not a known setting (typo?); see docs/configuration.md"
        )
    settings = cls(**values)
    validate(settings)
    return settings
