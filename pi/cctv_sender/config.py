"""Configuration from command-line flags and ``CCTV_SENDER_*`` environment variables.

Flags win over the environment. Every problem raises :class:`ConfigError` with one line
that names the flag or variable, which the CLI prints without a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cctv_sender import __version__
from cctv_sender.sources import SourceConfigError, SourceSpec, parse_size, parse_source
from cctv_sender.tlsverify import TLSOptions, normalize_pin
from cctv_sender.wire import CAMERA_NAME_RE

PREFIX = "CCTV_SENDER_"
SYSTEM_STATE_DIR = "/var/lib/cctv-sender"


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message is one line for the user."""


@dataclass(frozen=True)
class Config:
    """Everything the sender needs to run."""

    source: SourceSpec
    #: ingest's base URL; several, comma-separated, fail over in turn (sender/failover.py)
    ingest: str
    camera: str
    token: str
    fps: float = 10.0
    loop: bool = False
    size: tuple[int, int] | None = None
    quality: int = 80
    state_dir: Path = Path(".")
    queue_size: int = 4
    spool_bytes: int = 256 * 1_000_000
    spool_rate: float = 15.0
    timeout_s: float = 10.0
    reconnect_max_s: float = 30.0
    camera_gone_max_s: float = 60.0
    max_frames: int = 0
    flush_timeout_s: float = 30.0
    log_level: str = "INFO"
    check: bool = False
    serve_rtsp: str = ""
    # how ingest's TLS certificate is checked (cctv_sender/tlsverify.py); insecure: allow http://
    ca_file: str = ""
    pin_sha256: str = ""
    insecure: bool = False
    #: the token's file, when it came from one: re-read when it changes (a rotated token is
    #: taken up without a restart)
    token_file: Path | None = None

    @property
    def ingest_urls(self) -> tuple[str, ...]:
        """Every ingest base URL, in the order they are tried."""
        return tuple(u for u in self.ingest.split(",") if u)

    @property
    def tls(self) -> TLSOptions:
        """The certificate checks for an https:// ingest URL."""
        return TLSOptions(self.ca_file, self.pin_sha256)


# option name -> (env suffix, help); the env variable is CCTV_SENDER_<suffix>
_OPTIONS: dict[str, tuple[str, str]] = {
    "source": ("SOURCE", "camera: picamera2:, v4l2:/dev/video0, 0, rtsp://..., http://... "
               "(MJPEG), file:/path.mp4"),
    "ingest": ("INGEST", "ingest base URL, e.g. https://ingest.local:8080; several, "
               "comma-separated (one per node), are tried in turn when one is down"),
    "camera": ("CAMERA", "camera name registered at ingest"),
    "token_file": ("TOKEN_FILE", "file holding the camera's bearer token (or set "
                   "CCTV_SENDER_TOKEN)"),
    "fps": ("FPS", "most frames per second to send (0: no limit; default 10)"),
    "loop": ("LOOP", "restart a file source at its end"),
    "size": ("SIZE", "frame size WIDTHxHEIGHT (camera resolution or resize)"),
    "quality": ("QUALITY", "JPEG quality 1-100 when the sender encodes (default 80)"),
    "state_dir": ("STATE_DIR", "sequence counter and spool live here (default "
                  "$STATE_DIRECTORY or ~/.local/state/cctv-sender)"),
    "queue": ("QUEUE", "live frames held in memory; the oldest is dropped when full "
              "(default 4)"),
    "spool_mb": ("SPOOL_MB", "disk spool cap in MB while ingest is unreachable; 0 turns the "
                 "spool off (default 256)"),
    "spool_rate": ("SPOOL_RATE", "spooled frames sent per second after recovery, on top of "
                   "live ones (0: no limit; default 15)"),
    "timeout": ("TIMEOUT", "network timeout in seconds for camera and ingest (default 10)"),
    "reconnect_max": ("RECONNECT_MAX", "longest wait between reconnects, seconds "
                      "(default 30)"),
    "camera_gone_max": ("CAMERA_GONE_MAX", "exit with status 1 after this many seconds "
                        "without a frame, so systemd restarts a clean process (0: never; "
                        "default 60)"),
    "max_frames": ("MAX_FRAMES", "stop after capturing this many frames, send them, exit"),
    "flush_timeout": ("FLUSH_TIMEOUT", "how long to keep sending at the end of "
                      "--max-frames or a file (default 30 s)"),
    "log_level": ("LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR (default INFO)"),
    "ca_file": ("CA_FILE", "trust this CA (PEM) for ingest's https:// certificate instead of "
                "the system's CAs, e.g. the ca.crt that stack/deploy made"),
    "pin_sha256": ("PIN_SHA256", "accept only the ingest certificate with this SHA-256 "
                   "fingerprint (AB:CD:... as printed by stack/deploy or cctv local)"),
    "insecure": ("INSECURE", "allow a plain http:// ingest URL: the token and frames cross "
                 "the network unencrypted (a warning is logged)"),
    "serve_rtsp": ("SERVE_RTSP", "instead of pushing JPEG to ingest, serve the Pi camera as "
                   "H.264 over RTSP on HOST:PORT (e.g. 0.0.0.0:8554) for the cluster to "
                   "pull; ingest and token are then not needed"),
}
_EXTRA_ENV = {"TOKEN"}
_FLAGS = {"loop", "insecure"}  # on/off options: a flag, or true/false in the environment


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (flags only; environment defaults are applied afterwards)."""
    p = _Parser(prog="cctv-sender", description="Ship camera frames to cctv-swarm ingest.",
                epilog="Every option can also be set as CCTV_SENDER_<NAME> in the environment "
                       "(e.g. CCTV_SENDER_SOURCE); the token only comes from "
                       "CCTV_SENDER_TOKEN or a token file.")
    for name, (suffix, help_text) in _OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        if name in _FLAGS:
            p.add_argument(flag, action="store_true", default=None,
                           help=f"{help_text} [{PREFIX}{suffix}]")
        else:
            p.add_argument(flag, dest=name, default=None, help=f"{help_text} [{PREFIX}{suffix}]")
    p.add_argument("--env-file", default=None,
                   help="read KEY=value settings from this file first (the systemd "
                        "EnvironmentFile, e.g. /etc/cctv-sender/cctv-sender.env); "
                        "the real environment wins")
    p.add_argument("--check", action="store_true",
                   help="check the camera and ingest, print what is wrong, and exit")
    p.add_argument("--version", action="version", version=f"cctv-sender {__version__}")
    return p


def _num(name: str, raw: str, kind: type, minimum: float = 0) -> float | int:
    var = f"--{name.replace('_', '-')}"
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigError(f"{var}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{var}={raw!r} must be at least {minimum}")
    return value


def _bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{PREFIX}{_OPTIONS[name][0]}={raw!r} must be true or false")


def default_state_dir(env: Mapping[str, str]) -> Path:
    """$STATE_DIRECTORY (systemd), else /var/lib/cctv-sender when it is writable (an
    installed system), else $XDG_STATE_HOME/cctv-sender, else ~/.local/state/cctv-sender."""
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    system = Path(SYSTEM_STATE_DIR)
    if system.is_dir() and os.access(system, os.W_OK | os.X_OK):
        return system  # installed by install.sh: --check as the service user finds it
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "cctv-sender"


def _read_token(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    token = env.get(PREFIX + "TOKEN", "").strip()
    if args.token_file:
        path = Path(args.token_file).expanduser()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"token file {path}: {exc.strerror}") from None
        if not token:
            raise ConfigError(f"token file {path} is empty")
    if any(c.isspace() for c in token):
        raise ConfigError("the token must be one word without spaces")
    return token


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines as systemd's EnvironmentFile reads them (comments, blank lines,
    optional quotes, optional ``export``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"env file {path}: {exc.strerror}") from None
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ConfigError(f"env file {path} line {number}: expected KEY=value")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def _size_or_error(raw: str | None) -> tuple[int, int] | None:
    if not raw:
        return None
    try:
        return parse_size(raw, "--size")
    except SourceConfigError as exc:
        raise ConfigError(str(exc)) from None


def load_config(argv: Sequence[str] | None = None,
                env: Mapping[str, str] | None = None) -> Config:
    """Parse flags and environment into a :class:`Config` (raises :class:`ConfigError`)."""
    env = os.environ if env is None else env
    pre = build_parser().parse_args(argv)
    if pre.env_file:
        env = {**read_env_file(Path(pre.env_file).expanduser()), **env}
    known = {suffix for suffix, _h in _OPTIONS.values()} | _EXTRA_ENV
    for var in sorted(env):
        if var.startswith(PREFIX) and var[len(PREFIX):] not in known:
            raise ConfigError(f"unknown variable {var} (known: "
                              + ", ".join(PREFIX + k for k in sorted(known)) + ")")
    args = pre
    for name, (suffix, _h) in _OPTIONS.items():
        if getattr(args, name) is None and env.get(PREFIX + suffix, "") != "":
            raw = env[PREFIX + suffix]
            setattr(args, name, _bool(name, raw) if name in _FLAGS else raw)

    try:
        source = parse_source(args.source or "")
    except SourceConfigError as exc:
        raise ConfigError(str(exc)) from None

    serve_rtsp = (args.serve_rtsp or "").strip()
    if serve_rtsp:
        host, sep, port = serve_rtsp.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--serve-rtsp={serve_rtsp!r} must be HOST:PORT, e.g. "
                              "0.0.0.0:8554")
        if source.kind != "picamera2":
            raise ConfigError("--serve-rtsp serves the Pi camera: use --source picamera2:")
        if args.camera and not CAMERA_NAME_RE.fullmatch(args.camera):
            raise ConfigError(f"camera name {args.camera!r} must match "
                              f"{CAMERA_NAME_RE.pattern}")
        return Config(source=source, ingest="", camera=args.camera or "camera", token="",
                      fps=float(_num("fps", args.fps or "30", float)),
                      size=_size_or_error(args.size),
                      timeout_s=float(_num("timeout", args.timeout or "10", float, 0.1)),
                      camera_gone_max_s=float(_num("camera_gone_max",
                                                   args.camera_gone_max or "60", float)),
                      log_level=(args.log_level or "INFO").upper(), serve_rtsp=serve_rtsp)

    if not args.ingest:
        raise ConfigError("no ingest URL given (--ingest or CCTV_SENDER_INGEST), "
                          "e.g. https://ingest.local:8080")
    urls = [u.strip().rstrip("/") for u in args.ingest.split(",")]
    schemes = set()
    for url in urls:
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ConfigError(f"ingest URL {url!r} has a bad port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ConfigError(f"ingest URL {url!r} must look like https://host:8080")
        schemes.add(parts.scheme)
    if len(set(urls)) != len(urls):
        raise ConfigError(f"ingest URLs {args.ingest!r}: one is given twice")
    if len(schemes) > 1:
        raise ConfigError(f"ingest URLs {args.ingest!r}: all https:// or all http://, not both")

    if not args.camera:
        raise ConfigError("no camera name given (--camera or CCTV_SENDER_CAMERA)")
    if not CAMERA_NAME_RE.fullmatch(args.camera):
        raise ConfigError(f"camera name {args.camera!r} must match {CAMERA_NAME_RE.pattern}")

    token = _read_token(args, env)
    if not token:
        raise ConfigError("no token: set CCTV_SENDER_TOKEN or --token-file "
                          "(the camera's token at ingest)")

    size = None
    if args.size:
        try:
            size = parse_size(args.size, "--size")
        except SourceConfigError as exc:
            raise ConfigError(str(exc)) from None
    level = (args.log_level or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"--log-level={args.log_level!r}: use DEBUG, INFO, WARNING or ERROR")
    quality = int(_num("quality", args.quality or "80", int, 1))
    if quality > 100:
        raise ConfigError(f"--quality={quality} must be between 1 and 100")
    ca_file, pin = _tls_options(args, schemes.pop())

    return Config(
        source=source, ingest=",".join(urls), camera=args.camera,
        token=token,
        token_file=Path(args.token_file).expanduser() if args.token_file else None,
        fps=float(_num("fps", args.fps or "10", float)),
        loop=bool(args.loop),
        size=size, quality=quality,
        state_dir=Path(args.state_dir).expanduser() if args.state_dir
        else default_state_dir(env),
        queue_size=int(_num("queue", args.queue or "4", int, 1)),
        spool_bytes=int(float(_num("spool_mb", args.spool_mb or "256", float)) * 1_000_000),
        spool_rate=float(_num("spool_rate", args.spool_rate or "15", float)),
        timeout_s=float(_num("timeout", args.timeout or "10", float, 0.1)),
        reconnect_max_s=float(_num("reconnect_max", args.reconnect_max or "30", float, 0.1)),
        camera_gone_max_s=float(_num("camera_gone_max", args.camera_gone_max or "60", float)),
        max_frames=int(_num("max_frames", args.max_frames or "0", int)),
        flush_timeout_s=float(_num("flush_timeout", args.flush_timeout or "30", float)),
        log_level=level, check=bool(args.check),
        ca_file=ca_file, pin_sha256=pin, insecure=bool(args.insecure),
    )


def _tls_options(args: argparse.Namespace, scheme: str) -> tuple[str, str]:
    """The CA file and the pinned fingerprint, checked; plain http:// only with --insecure."""
    ca_file = (args.ca_file or "").strip()
    pin = ""
    if args.pin_sha256:
        try:
            pin = normalize_pin(args.pin_sha256)
        except ValueError as exc:
            raise ConfigError(f"--pin-sha256: {exc}") from None
    if scheme == "http":
        if ca_file or pin:
            raise ConfigError("--ca-file and --pin-sha256 need an https:// ingest URL")
        if not args.insecure:
            raise ConfigError(f"ingest URL {args.ingest.strip()!r} is plain HTTP: the camera "
                              "token and frames would cross the network in clear. Use "
                              "https:// (with --ca-file or --pin-sha256 for a private "
                              "certificate), or allow it with --insecure")
    if ca_file:
        path = Path(ca_file).expanduser()
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except OSError as exc:
            raise ConfigError(f"CA file {path}: {exc.strerror}") from None
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise ConfigError(f"CA file {path} holds no PEM certificate")
        ca_file = str(path)
    return ca_file, pin
