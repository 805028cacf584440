"""Helpers for tests and benchmarks: real redis-server and real service processes on loopback."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CCTV_SHARED", ROOT.parent / "shared")).resolve()
CLIP = SHARED / "media" / "intersection_cctv.mp4"
MODEL_PT = SHARED / "models" / "yolov8n_int8recon.pt"
MODEL_OPENVINO = SHARED / "models" / "yolov8n_int8_openvino_model"
MODEL_ONNX = SHARED / "models" / "yolov8n_int8recon.onnx"

#: the web API's OpenAPI file (docs/api/openapi.yaml links it)
OPENAPI = ROOT / "services" / "cctv" / "web" / "openapi.yaml"


def check_api_reply(payload: object, path: str, status: str = "200") -> None:
    """Fail unless ``payload`` matches the JSON schema that the OpenAPI file gives the
    ``status`` reply of ``GET path`` (``path`` as the file writes it, with ``{event_id}``)."""
    import yaml
    from openapi_schema_validator import OAS30Validator

    spec = yaml.safe_load(OPENAPI.read_text())
    reply = spec["paths"][path]["get"]["responses"][status]
    if "$ref" in reply:
        reply = spec["components"]["responses"][reply["$ref"].rsplit("/", 1)[1]]
    schema = reply["content"]["application/json"]["schema"]
    OAS30Validator({**schema, "components": spec["components"]},
                   format_checker=OAS30Validator.FORMAT_CHECKER).validate(payload)


def wait_for(cond, timeout_s: float, what: str, logs=(), poll_s: float = 0.05) -> None:
    """Poll ``cond`` until true, or fail naming ``what`` with the tail of each service log in
    ``logs`` (:class:`Service` objects)."""
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n" + "\n".join(
                f"--- {s.name}\n{s.log()[-3000:]}" for s in logs))
        time.sleep(poll_s)


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1, taken below the kernel's ephemeral
    range: outgoing connections (which take ephemeral ports) cannot grab it between this call
    and the bind, nor while a service using it restarts. A service started on it still may find
    it taken by another test run: :func:`start_listening` retries."""
    lo, _hi = _ephemeral_range()
    for _ in range(200):
        port = random.randrange(max(1024, lo - 12000), lo)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded low range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_listening(start, port: int | None = None, *, keep_port: bool = False,
                    timeout_s: float = 30.0, retry_s: float = 15.0):
    """``start(port) -> Service``, then wait until it listens; returns ``(port, service)``.

    When the service exits before listening (its port was taken meanwhile), start it again:
    on another free port, or with ``keep_port`` (a restart: clients know the port) on the same
    one, for up to ``retry_s``."""
    port = port or free_port()
    end = time.monotonic() + retry_s
    while True:
        svc = start(port)
        try:
            wait_port(port, timeout_s, svc.proc)
            return port, svc
        except RuntimeError:
            svc.stop()
            if time.monotonic() > end:
                raise
            if keep_port:
                time.sleep(0.2)
            else:
                port = free_port()


def wait_port(port: int, timeout_s: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until something listens on 127.0.0.1:port (fail early if ``proc`` exits)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s}s")


#: the password of each Redis ACL user in tests (core/redis_acl.py has the users and rules)
def redis_password_for(user: str) -> str:
    """The test password of Redis ACL user ``user``."""
    return f"{user}-test-password"


def redis_acl_file(folder: Path) -> Path:
    """Write the production ACL (every user, test passwords) into ``folder``."""
    from cctv.core.redis_acl import USERS, write_acl_file

    return write_acl_file(folder / "users.acl", {u: redis_password_for(u) for u in USERS})


def admin_url(port: int, host: str = "127.0.0.1") -> str:
    """URL of a test Redis as the ``admin`` user (tests' own clients: set-up and checks)."""
    return f"redis://admin:{redis_password_for('admin')}@{host}:{port}/0"


@dataclass
class RedisServer:
    """A real redis-server process on a free loopback port, with the production ACL (the
    ``default`` user off; :attr:`url` authenticates as ``admin``, and :class:`Service` turns it
    into the service's own user). ``extra`` are more redis-server arguments."""

    port: int = field(default_factory=free_port)
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cctv-redis-")))
    proc: subprocess.Popen | None = None
    extra: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return admin_url(self.port)

    def start(self, retry_s: float = 15.0) -> RedisServer:
        """Start redis-server. The first start moves to another free port when its port was
        taken in the meantime; a restart keeps its port (clients know it) and retries for
        ``retry_s`` while something else holds it."""
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        restart = self.proc is not None
        end = time.monotonic() + retry_s
        while True:
            self.proc = subprocess.Popen(
                [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no",
                 "--loglevel", "warning", "--aclfile", str(redis_acl_file(self.dir)),
                 *self.extra],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                wait_port(self.port, 10, self.proc)
                return self
            except RuntimeError:  # exited before listening: the port is taken
                if time.monotonic() > end:
                    raise
                if restart:
                    time.sleep(0.2)
                else:
                    self.port = free_port()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def acl_denials(self, reset: bool = True) -> list[str]:
        """What the ACL refused since the last call (``ACL LOG``): one line per refusal, the
        user, the command or key and the count. Empty when the server is not running."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            with self.client() as c:
                log = c.acl_log()
                if reset:
                    c.acl_log_reset()
        except redis.ConnectionError:
            return []
        return [f"user {e.get('username')} {e.get('reason')} {e.get('object')} "
                f"({e.get('context')}, {e.get('count')}x)" for e in log]


#: the viewer account every test service gets (the web viewer and its API require a login)
VIEWER_USER, VIEWER_PASSWORD = "viewer", "viewer-test-password"


@functools.lru_cache(maxsize=1)
def viewer_account() -> str:
    """``user:<hash>`` of the test viewer account (for CCTV_VIEWERS). pbkdf2 with few rounds:
    a test server checks it quickly; real accounts use `cctv hash-password` (scrypt)."""
    from werkzeug.security import generate_password_hash

    return f"{VIEWER_USER}:{generate_password_hash(VIEWER_PASSWORD, 'pbkdf2:sha256:1000')}"


def service_env(redis_url: str, **cctv: object) -> dict[str, str]:
    """Environment for a service process: PYTHONPATH to the source tree and CCTV_* values
    (including the test viewer account)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCTV_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "services"), str(ROOT / "pi")])
    env["PYTHONUNBUFFERED"] = "1"
    env["CCTV_REDIS_URL"] = redis_url
    env["CCTV_LOG_JSON"] = "false"
    env["CCTV_VIEWERS"] = viewer_account()
    for key, value in cctv.items():
        env["CCTV_" + key.upper()] = str(value)
    return env


def as_service_user(env: dict[str, str], service: str) -> dict[str, str]:
    """``env`` with the Redis credentials of ``service``'s own ACL user instead of the admin
    user in ``CCTV_REDIS_URL`` (commands that are not a service keep the admin user)."""
    from urllib.parse import urlsplit, urlunsplit

    from cctv.core.redis_acl import SERVICE_RULES

    url = env.get("CCTV_REDIS_URL", "")
    parts = urlsplit(url)
    if service not in SERVICE_RULES or not parts.username or "CCTV_REDIS_USERNAME" in env:
        return env
    host = parts.hostname or "127.0.0.1"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return {**env, "CCTV_REDIS_URL": urlunsplit(parts._replace(netloc=netloc)),
            "CCTV_REDIS_USERNAME": service, "CCTV_REDIS_PASSWORD": redis_password_for(service)}


class Service:
    """A real service process (``python -m cctv ...``) with its log in a file. A service
    connects to Redis as its own ACL user (:func:`as_service_user`)."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path, name: str) -> None:
        env = as_service_user(env, args[0])
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "cctv", *args], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running(services: list[Service]) -> Iterator[list[Service]]:
    """Stop every service on exit, whatever happened."""
    try:
        yield services
    finally:
        for svc in services:
            svc.stop()


def clip_jpegs(path: Path = CLIP, n: int = 100, quality: int = 80, step: int = 1) -> list[bytes]:
    """The first ``n`` frames (every ``step``-th) of a clip, JPEG-encoded."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open the clip {path} (set CCTV_SHARED?)")
    out: list[bytes] = []
    i = 0
    rewinds = 0
    while len(out) < n:
        ok, frame = cap.read()
        if not ok:
            rewinds += 1
            if rewinds > 100 or i == 0:
                raise RuntimeError(f"the clip {path} yields no frames")
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        if i % step == 0:
            out.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
                       .tobytes())
        i += 1
    cap.release()
    return out


def post_frame(session, base_url: str, camera: str, token: str, jpeg: bytes, seq: int,
               **extra_headers: str):
    """POST one frame to ingest the way the sender does; returns the response."""
    headers = {"Content-Type": "image/jpeg", "Authorization": f"Bearer {token}",
               "X-Frame-Seq": str(seq), "X-Capture-Ts": str(time.time_ns() // 1000)}
    headers.update(extra_headers)
    return session.post(f"{base_url}/api/v1/cameras/{camera}/frames", data=jpeg,
                        headers=headers, timeout=10)


class FrameSender:
    """Sends JPEG frames for one camera at a fixed rate in a thread; records every answer in
    ``tally`` (:class:`accounting.Tally`), and the 2xx / other seqs in ``accepted`` / ``failed``."""

    def __init__(self, base_url: str, camera: str, token: str, jpegs: list[bytes],
                 fps: float, first_seq: int = 0) -> None:
        import threading

        from accounting import Tally

        self.tally = Tally()
        self.base_url, self.camera, self.token = base_url, camera, token
        self.jpegs, self.fps, self.seq = jpegs, fps, first_seq
        self.accepted: list[int] = []
        self.failed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> FrameSender:
        self._thread.start()
        return self

    def _run(self) -> None:
        import requests

        session = requests.Session()
        next_at = time.monotonic()
        i = 0
        while not self._stop.is_set():
            jpeg = self.jpegs[i % len(self.jpegs)]
            try:
                resp = post_frame(session, self.base_url, self.camera, self.token, jpeg,
                                  self.seq)
                (self.accepted if resp.status_code in (200, 202) else self.failed).append(
                    self.seq)
                self.tally.record(self.seq, resp.status_code)
            except requests.RequestException as exc:
                self.failed.append(self.seq)
                self.tally.record(self.seq, None, type(exc).__name__)
                session = requests.Session()
            self.seq += 1
            i += 1
            next_at += 1 / self.fps
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def account(self, rdb, timeout_s: float = 30.0):
        """Stop, then wait until every acknowledged frame has a fate and return the
        :class:`accounting.Accounting` of this camera."""
        from accounting import wait_settled

        self.stop()
        return wait_settled(rdb, self.camera, self.tally, timeout_s)


class Boxes:
    """The detections ultralytics' trackers take (its ``Boxes``: ``xyxy``, ``xywh``, ``conf``,
    ``cls``, masking), built from plain arrays, to run them beside cctv's own tracker."""

    def __init__(self, xyxy, conf, cls) -> None:
        self.xyxy, self.conf, self.cls = xyxy, conf, cls

    @property
    def xywh(self):
        out = self.xyxy.copy()
        out[:, 2:] = self.xyxy[:, 2:] - self.xyxy[:, :2]
        out[:, :2] = self.xyxy[:, :2] + out[:, 2:] / 2
        return out

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, mask) -> Boxes:
        return Boxes(self.xyxy[mask], self.conf[mask], self.cls[mask])


def until(page, js: str, timeout_s: float) -> None:
    """Poll ``js`` in a Playwright page until it is true. (Playwright's wait_for_function
    evaluates its predicate with eval, which the pages' Content-Security-Policy forbids.)"""
    end = time.monotonic() + timeout_s
    while not page.evaluate(js):
        if time.monotonic() > end:
            raise AssertionError(f"not true after {timeout_s} s: {js}")
        time.sleep(0.1)
