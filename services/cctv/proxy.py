"""nginx in front of ingest and web: render its configuration and run it as a child process.

The stack runs nginx as its own service (docker/proxy.Dockerfile renders the same template with
docker/proxy/entrypoint.sh); ``cctv local`` and the tests use :class:`Nginx` to run a real nginx
on loopback in front of their gunicorn processes. Why a buffering proxy, and what it bounds, is
in docs/architecture.md ("Slow clients").
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "docker" / "proxy" / "nginx.conf.template"
#: how long nginx waits for each part of a request (headers, then each body read) by default
DEFAULT_CLIENT_TIMEOUT_S = 10.0


class ProxyError(RuntimeError):
    """nginx is missing, its configuration is invalid, or it did not start."""


def find_nginx() -> str | None:
    """The nginx binary (Debian: /usr/sbin/nginx, often not on a user's PATH), or None."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


@dataclass(frozen=True)
class ProxyConfig:
    """What the nginx template needs; the listen and upstream values are ``host:port``."""

    ingest_listen: str
    ingest_upstream: str
    web_listen: str
    web_upstream: str
    max_body_bytes: int
    client_timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S
    send_timeout_s: float = 30.0
    workers: str = "auto"
    #: a ``resolver`` directive (the stack: Docker's DNS); empty for IP upstreams
    resolver: str = ""
    #: PEM certificate (chain) and key: both servers then speak TLS only (plain HTTP on their
    #: ports is refused by ingest's server and redirected by web's); empty = plain HTTP
    tls_cert: str = ""
    tls_key: str = ""

    @property
    def tls(self) -> bool:
        """Whether nginx terminates TLS."""
        return bool(self.tls_cert)

    @property
    def scheme(self) -> str:
        """``https`` with TLS, else ``http``."""
        return "https" if self.tls else "http"


def render_config(cfg: ProxyConfig, temp_dir: Path, pid_file: Path, error_log: Path,
                  template: Path = TEMPLATE) -> str:
    """The nginx.conf text for ``cfg``; raises :class:`ProxyError` on a leftover placeholder."""
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ProxyError("TLS needs both a certificate and a key")
    for path in filter(None, (cfg.tls_cert, cfg.tls_key)):
        if not os.access(path, os.R_OK):
            raise ProxyError(f"TLS file {path} is not readable")
        if any(c in path for c in ';{}"\'\n') or any(c.isspace() for c in path):
            raise ProxyError(f"TLS file name {path!r}: no spaces, quotes, braces or ';'")
    try:
        text = template.read_text()
    except OSError as exc:
        raise ProxyError(f"nginx template {template} not readable: {exc.strerror}") from None
    values = {
        "WORKERS": cfg.workers, "PID_FILE": str(pid_file), "ERROR_LOG": str(error_log),
        "TEMP_DIR": str(temp_dir), "RESOLVER": cfg.resolver,
        "CLIENT_TIMEOUT_S": f"{max(1, round(cfg.client_timeout_s))}",
        "SEND_TIMEOUT_S": f"{max(1, round(cfg.send_timeout_s))}",
        "INGEST_LISTEN": cfg.ingest_listen, "INGEST_UPSTREAM": cfg.ingest_upstream,
        "WEB_LISTEN": cfg.web_listen, "WEB_UPSTREAM": cfg.web_upstream,
        "MAX_BODY_BYTES": str(cfg.max_body_bytes),
        "LISTEN_TLS": "ssl" if cfg.tls else "",
        "TLS_CERTIFICATE": (f"ssl_certificate {cfg.tls_cert}; ssl_certificate_key {cfg.tls_key};"
                            if cfg.tls else ""),
    }
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise ProxyError(f"nginx template {template}: no value for {', '.join(sorted(set(left)))}")
    return text


def _listening(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host.strip("[]")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.2):
        return True
    return False


class Nginx:
    """A real nginx master process (``daemon off``) with its own prefix directory."""

    def __init__(self, cfg: ProxyConfig, binary: str | None = None,
                 workdir: Path | None = None) -> None:
        exe = binary or find_nginx()
        if exe is None:
            raise ProxyError("nginx is not installed (Debian: apt-get install nginx)")
        self.cfg, self.binary = cfg, exe
        # nginx started as root runs its workers as nobody: they must be able to reach the
        # temporary files, so the folder is world-traversable (tempfile makes 0700 ones)
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="cctv-nginx-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        (self.dir / "temp").mkdir(exist_ok=True)
        self.conf = self.dir / "nginx.conf"
        self.error_log = self.dir / "error.log"
        self.conf.write_text(render_config(cfg, self.dir / "temp", self.dir / "nginx.pid",
                                           self.error_log))
        self.proc: subprocess.Popen | None = None

    def _cmd(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.dir), "-e", str(self.error_log),
                "-c", str(self.conf), *extra]

    def check(self) -> None:
        """``nginx -t`` on the rendered file; raises :class:`ProxyError` with nginx's words."""
        out = subprocess.run(self._cmd("-t", "-q"), capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise ProxyError(f"nginx -t failed: {(out.stderr or out.stdout).strip()}")

    def start(self, timeout_s: float = 15.0, **popen: object) -> Nginx:
        """Check the configuration, start nginx and wait until both servers listen."""
        self.check()
        self.proc = subprocess.Popen(self._cmd("-g", "daemon off;"), start_new_session=True,
                                     stdin=subprocess.DEVNULL, **popen)  # type: ignore[arg-type]
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise ProxyError(f"nginx exited with code {self.proc.returncode}: "
                                 f"{self.log()[-2000:]}")
            if _listening(self.cfg.ingest_listen) and _listening(self.cfg.web_listen):
                return self
            time.sleep(0.05)
        self.stop()
        raise ProxyError(f"nginx did not listen on {self.cfg.ingest_listen} and "
                         f"{self.cfg.web_listen} within {timeout_s:.0f}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop nginx (SIGQUIT: graceful, then SIGKILL of its process group)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGQUIT)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def log(self) -> str:
        """nginx's error log so far."""
        try:
            return self.error_log.read_text(errors="replace")
        except OSError:
            return ""
