"""Slow and hostile HTTP clients for the slow-client tests and bench/slow_clients.py: raw sockets
on loopback that send headers and a little body and then stall, MJPEG viewers that keep a
stream open, and a prober that times /healthz and a sender's POSTs meanwhile."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse


def _addr(base_url: str) -> tuple[str, int]:
    u = urlparse(base_url)
    return u.hostname or "127.0.0.1", u.port or 80


def slow_body_connections(base_url: str, path: str, n: int, *, token: str | None,
                          content_length: int = 200_000, body_bytes: bytes = b"\xff\xd8",
                          connect_timeout_s: float = 5.0) -> list[socket.socket]:
    """Open ``n`` connections that each send a frame POST's headers (with ``token`` or with no
    Authorization at all) and the first two body bytes, and then send nothing more."""
    host, port = _addr(base_url)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: image/jpeg\r\n"
            f"{auth}X-Frame-Seq: 1\r\nX-Capture-Ts: 1\r\n"
            f"Content-Length: {content_length}\r\n\r\n").encode()
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=connect_timeout_s)
        s.sendall(head + body_bytes)
        socks.append(s)
    return socks


def close_all(socks: list[socket.socket]) -> None:
    """Close sockets, ignoring those already closed by the peer."""
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()


class MjpegViewers:
    """``n`` viewers of one MJPEG URL, each in a thread reading the stream slowly (a small
    read every ``read_every_s``), counting the statuses they got and the bytes they read."""

    def __init__(self, base_url: str, path: str, n: int, cookie: str = "",
                 read_every_s: float = 0.2) -> None:
        self.host, self.port = _addr(base_url)
        self.path, self.n, self.cookie, self.read_every_s = path, n, cookie, read_every_s
        self.statuses: dict[int, int] = {}
        self.bytes_read = 0
        self.retry_after: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._view, daemon=True) for _ in range(n)]

    def start(self) -> MjpegViewers:
        for t in self._threads:
            t.start()
        return self

    def _view(self) -> None:
        try:
            s = socket.create_connection((self.host, self.port), timeout=10)
        except OSError:
            self._count(-1)
            return
        with s:
            cookie = f"Cookie: {self.cookie}\r\n" if self.cookie else ""
            s.sendall(f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\n{cookie}\r\n".encode())
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    head += chunk
            except OSError:
                self._count(-1)
                return
            try:
                status = int(head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                status = -1
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"retry-after:"):
                    with self._lock:
                        self.retry_after.add(line.split(b":", 1)[1].strip().decode())
            self._count(status)
            while not self._stop.is_set():
                try:
                    chunk = s.recv(1024)
                except OSError:
                    return
                if not chunk:
                    return
                with self._lock:
                    self.bytes_read += len(chunk)
                self._stop.wait(self.read_every_s)

    def _count(self, status: int) -> None:
        with self._lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)


@dataclass
class Probe:
    """Times GETs of one URL every ``every_s`` in a thread: each is ok only when it answers
    2xx within ``bound_s``."""

    url: str
    bound_s: float = 1.0
    every_s: float = 0.2
    ok: int = 0
    late_or_failed: list[str] = field(default_factory=list)
    worst_s: float = 0.0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Probe:
        self._thread.start()
        return self

    def _run(self) -> None:
        import requests

        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                resp = requests.get(self.url, timeout=self.bound_s)
                dt = time.monotonic() - t0
                self.worst_s = max(self.worst_s, dt)
                if 200 <= resp.status_code < 300 and dt <= self.bound_s:
                    self.ok += 1
                else:
                    self.late_or_failed.append(f"{resp.status_code} after {dt:.2f}s")
            except requests.RequestException as exc:
                self.worst_s = max(self.worst_s, time.monotonic() - t0)
                self.late_or_failed.append(type(exc).__name__)
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
