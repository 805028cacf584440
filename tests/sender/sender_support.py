"""Helpers for the sender tests: run cctv-sender as a process, restartable ingest, a local
MJPEG HTTP server, test JPEGs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import redis

from support import ROOT, SHARED, Service, service_env, start_listening, wait_for, wait_port  # noqa: F401

CLIP_480 = SHARED / "media" / "intersection_cctv.mp4"
CLIP_720 = SHARED / "media" / "highway_traffic.mp4"
STANDIN = Path(__file__).resolve().parent / "standin"


def standin_paths(tmp_path: Path, version: str = "0.3.30") -> list[str]:
    """Import paths for the picamera2 stand-in reporting ``version`` in its package metadata
    (as Debian's python3-picamera2 does): the metadata folder first, then the stand-in."""
    site = tmp_path / f"standin-site-{version}"
    dist = site / f"picamera2-{version}.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: picamera2\n"
                                   f"Version: {version}\n")
    return [str(site), str(STANDIN)]


def standin_env(tmp_path: Path, version: str = "0.3.30", **extra: str) -> dict[str, str]:
    """Environment for a sender process that imports the picamera2 stand-in."""
    paths = [*standin_paths(tmp_path, version), str(ROOT / "pi")]
    return sender_env(PYTHONPATH=os.pathsep.join(paths),
                      STANDIN_PICAMERA2_JPEG=str(SHARED / "media" / "bus.jpg"),
                      STANDIN_PICAMERA2_LOG=str(tmp_path / "picamera2.jsonl"), **extra)


def standin_calls(log: Path) -> list[dict]:
    """The calls the stand-in logged, one dict per line."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def open_fds() -> int:
    """Descriptors open in this process right now."""
    return len(os.listdir("/proc/self/fd"))


def make_jpeg(i: int, size: tuple[int, int] = (320, 240), pad: int = 0) -> bytes:
    """A small distinct JPEG; ``pad`` bytes of COM segments make it larger without cost."""
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :] = ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256)
    cv2.putText(img, str(i), (10, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 2)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    data = buf.tobytes()
    segments = b""
    while pad > 0:
        n = min(pad, 65000)
        segments += b"\xff\xfe" + (n + 2).to_bytes(2, "big") + b"p" * n
        pad -= n
    return data[:2] + segments + data[2:]


def sender_env(**extra: str) -> dict[str, str]:
    """Environment for a sender process: no CCTV_* from outside, the package on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCTV_")}
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env["PYTHONPATH"] = str(ROOT / "pi")
    env["PYTHONUNBUFFERED"] = "1"
    # the test ingests are plain HTTP on loopback; tests/test_tls.py runs the sender over TLS
    env["CCTV_SENDER_INSECURE"] = "true"
    env.update(extra)
    return env


class SenderProc:
    """``python -m cctv_sender`` with its log in a file and its state dir known."""

    def __init__(self, args: list[str], state_dir: Path, log_dir: Path, name: str = "sender",
                 env: dict[str, str] | None = None, camera: str = "cam1") -> None:
        self.state_dir, self.camera = state_dir, camera
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()/stop()
        full = [sys.executable, "-m", "cctv_sender", "--state-dir", str(state_dir), *args]
        self.proc = subprocess.Popen(full, env=env or sender_env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"sender still running after {timeout}s:\n{self.log()}")\
                from None
        self._log.close()
        return rc

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stats(self) -> dict:
        return json.loads((self.state_dir / self.camera / "stats.json").read_text())

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


class Ingest:
    """A real ingest on a fixed port that can be stopped and started again (outage tests)."""

    def __init__(self, redis_url: str, port: int, log_dir: Path, **cctv: object) -> None:
        self.redis_url, self.port, self.log_dir = redis_url, port, log_dir
        cctv.setdefault("cameras", "cam1:tok1-16charsfortests,cam2:tok2-16charsfortests")
        cctv.setdefault("ingest_workers", 1)
        self.cctv = cctv
        self.svc: Service | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Ingest:
        """Start ingest; a restart keeps the port (the sender knows it) and retries while the
        port is still taken, the first start may move to another free port."""
        restart = self.starts > 0

        def launch(port: int) -> Service:
            env = service_env(self.redis_url, ingest_bind=f"127.0.0.1:{port}", **self.cctv)
            self.starts += 1
            return Service(["ingest"], env, self.log_dir, f"ingest-{port}-{self.starts}")

        self.port, self.svc = start_listening(launch, self.port, keep_port=restart)
        return self

    def stop(self) -> None:
        if self.svc is not None:
            self.svc.stop()
            self.svc = None

    def kill(self) -> None:
        """SIGKILL the whole ingest (gunicorn and its workers): requests in flight are lost."""
        if self.svc is not None:
            self.svc.signal(signal.SIGKILL)
            self.svc.proc.wait(10)
            self.svc.stop()
            self.svc = None


def stream_seqs(rdb: redis.Redis, camera: str) -> list[tuple[int, bool]]:
    """(seq, late) of every frame in the camera's stream, in stream order."""
    out = []
    for _id, fields in rdb.xrange(f"cctv:frames:{camera}"):
        out.append((int(fields[b"seq"]), fields.get(b"late", b"0") == b"1"))
    return out


def spool_bytes(state_dir: Path, camera: str) -> int:
    """Bytes of frames in the sender's spool folder right now."""
    folder = state_dir / camera / "spool"
    total = 0
    for entry in folder.glob("*.jpg"):
        with contextlib.suppress(FileNotFoundError):
            total += entry.stat().st_size
    return total


class MjpegServer:
    """A local HTTP server of MJPEG streams, in the formats cameras and our viewer use.

    * ``/video.mjpg``: like our web viewer (``boundary=frame``, parts with Content-Length)
    * ``/?action=stream``: like mjpg-streamer (``boundary=boundarydonotcross``)
    * ``/nolength``: quoted boundary with leading dashes, parts without Content-Length
    * ``/snapshot.jpg``: one ``image/jpeg`` per request
    * ``/short``: closes the connection after ``short_after`` frames (camera loss)
    * ``/auth``: like ``/video.mjpg`` behind HTTP basic auth ``user:secret``
    """

    def __init__(self, frames: list[bytes], fps: float = 30.0, short_after: int = 5) -> None:
        self.frames, self.fps, self.short_after = frames, fps, short_after
        self.connections = 0
        self.sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *_a: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                server.connections += 1
                path = self.path
                if path.startswith("/snapshot.jpg"):
                    data = server.frames[server.sent % len(server.frames)]
                    server.sent += 1
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if path.startswith("/auth"):
                    import base64
                    want = "Basic " + base64.b64encode(b"user:secret").decode()
                    if self.headers.get("Authorization") != want:
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="cam"')
                        self.end_headers()
                        return
                if path.startswith("/nolength"):
                    header, delim, length = 'multipart/x-mixed-replace;boundary="--myb"', \
                        b"----myb", False
                elif path.startswith("/?action=stream"):
                    header, delim, length = \
                        "multipart/x-mixed-replace;boundary=boundarydonotcross", \
                        b"--boundarydonotcross", True
                elif path.startswith(("/video.mjpg", "/short", "/auth")):
                    header, delim, length = "multipart/x-mixed-replace; boundary=frame", \
                        b"--frame", True
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", header)
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                n = 0
                try:
                    while True:
                        data = server.frames[server.sent % len(server.frames)]
                        head = delim + b"\r\nContent-Type: image/jpeg\r\n"
                        if length:
                            head += f"Content-Length: {len(data)}\r\n".encode()
                        self.wfile.write(head + b"\r\n" + data + b"\r\n")
                        self.wfile.flush()
                        server.sent += 1
                        n += 1
                        if path.startswith("/short") and n >= server.short_after:
                            return
                        time.sleep(1.0 / server.fps)
                except (BrokenPipeError, ConnectionResetError):
                    return

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.httpd: socketserver.TCPServer = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> MjpegServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
