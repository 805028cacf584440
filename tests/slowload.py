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
    """``n`` viewers of MJPEG (or event stream) URLs, all served by one thread with a selector
    (so that the load costs the test process little), each reading its stream slowly (at most
    1 KiB per viewer every ``read_every_s``), counting the statuses they got and bytes read.
    A viewer's socket is closed when its server ends the stream."""

    def __init__(self, base_url: str, paths: list[str], n: int, headers: str = "",
                 read_every_s: float = 0.2) -> None:
        self.host, self.port = _addr(base_url)
        self.paths, self.n, self.headers, self.read_every_s = paths, n, headers, read_every_s
        self.statuses: dict[int, int] = {}
        self.bytes_read = 0
        self.retry_after: set[str] = set()
        self.open = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> MjpegViewers:
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        """Every viewer got its status line, and every accepted stream has ended."""
        return sum(self.statuses.values()) == self.n and self.open == 0

    def _run(self) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        heads: dict[socket.socket, bytes | None] = {}
        tails: dict[socket.socket, bytes] = {}
        for i in range(self.n):
            try:
                s = socket.create_connection((self.host, self.port), timeout=10)
                s.sendall(f"GET {self.paths[i % len(self.paths)]} HTTP/1.1\r\nHost: "
                          f"{self.host}\r\n{self.headers}\r\n".encode())
            except OSError:
                self._count(-1)
                continue
            s.setblocking(False)
            heads[s] = b""
            sel.register(s, selectors.EVENT_READ)
        try:
            while heads and not self._stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    s = key.fileobj
                    try:
                        chunk = s.recv(1024)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        chunk = b""
                    head = heads[s]
                    if head is not None:
                        head += chunk
                        if b"\r\n\r\n" in head or not chunk:
                            heads[s] = None
                            self.open += 1
                            tails[s] = head.split(b"\r\n\r\n", 1)[-1][-16:]
                            if self._parse(head) != 200:
                                chunk = b""  # a refusal: this viewer is done
                        else:
                            heads[s] = head
                    else:
                        self.bytes_read += len(chunk)
                        tails[s] = (tails[s] + chunk)[-16:]
                    if chunk and (tails.get(s, b"x").endswith(b"\r\n0\r\n\r\n")
                                  or tails.get(s) == b"0\r\n\r\n"):
                        chunk = b""  # the last chunk: the server ended the stream
                    if not chunk:
                        sel.unregister(s)
                        s.close()
                        del heads[s]
                        self.open -= 1
                self._stop.wait(self.read_every_s)
        finally:
            for s in list(heads):
                close_all([s])
            sel.close()

    def _parse(self, head: bytes) -> int:
        try:
            status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            status = -1
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"retry-after:"):
                self.retry_after.add(line.split(b":", 1)[1].strip().decode())
        self._count(status)
        return status

    def _count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


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

        self._t0 = time.monotonic()
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                resp = requests.get(self.url, timeout=self.bound_s)
                dt = time.monotonic() - t0
                self.worst_s = max(self.worst_s, dt)
                if 200 <= resp.status_code < 300 and dt <= self.bound_s:
                    self.ok += 1
                else:
                    self.late_or_failed.append(f"{resp.status_code} after {dt:.2f}s at "
                                               f"{t0 - self._t0:.1f}s")
            except requests.RequestException as exc:
                self.worst_s = max(self.worst_s, time.monotonic() - t0)
                self.late_or_failed.append(f"{type(exc).__name__} at {t0 - self._t0:.1f}s")
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# ---- ingest + web behind a real nginx, and the slow-client scenario ------------------------
@dataclass
class Proxied:
    """Real ingest and web gunicorn processes with a real nginx in front (as in the stack)."""

    ingest: str  # through the proxy (where cameras post)
    web: str  # through the proxy (where viewers look)
    ingest_direct: str  # gunicorn itself (what the container health check probes)
    web_direct: str
    services: list = field(default_factory=list)
    nginx: object = None

    def logs(self) -> str:
        """The tail of every process's log (for assertion messages)."""
        out = [f"--- {s.name}\n{s.log()[-2000:]}" for s in self.services]
        if self.nginx is not None:
            out.append(f"--- nginx\n{self.nginx.log()[-2000:]}")
        return "\n".join(out)


@contextlib.contextmanager
def proxied_services(redis_url: str, log_dir, *, cameras: str, web: bool = True,
                     client_timeout_s: float = 30.0, tls=None, **cctv: object):
    """Start ingest (2 workers x 8 threads, the defaults), optionally web, and nginx in front;
    stop them all on exit. ``cctv`` are extra CCTV_* settings for both services. ``tls``
    (tests/tlsfiles.TLSFiles): nginx speaks TLS only, with that certificate."""
    from cctv.proxy import Nginx, ProxyConfig

    from support import Service, free_port, service_env, wait_port

    ip, wp, pi, pw = free_port(), free_port(), free_port(), free_port()
    cctv.setdefault("max_frame_bytes", 2 * 1024 * 1024)
    services = []
    nginx = None
    try:
        workers = cctv.pop("ingest_workers", 2)
        env = service_env(redis_url, ingest_bind=f"127.0.0.1:{ip}", cameras=cameras,
                          ingest_workers=workers, ingest_threads=8, **cctv)
        services.append(Service(["ingest"], env, log_dir, f"ingest-{ip}"))
        wait_port(ip, 30, services[-1].proc)
        if web:
            env = service_env(redis_url, web_bind=f"127.0.0.1:{wp}", **cctv)
            services.append(Service(["web"], env, log_dir, f"web-{wp}"))
            wait_port(wp, 30, services[-1].proc)
        nginx = Nginx(ProxyConfig(
            ingest_listen=f"127.0.0.1:{pi}", ingest_upstream=f"127.0.0.1:{ip}",
            web_listen=f"127.0.0.1:{pw}", web_upstream=f"127.0.0.1:{wp}",
            max_body_bytes=int(cctv["max_frame_bytes"]), client_timeout_s=client_timeout_s,
            workers="2", tls_cert=str(tls.cert) if tls else "",
            tls_key=str(tls.key) if tls else ""), workdir=log_dir / f"nginx-{pi}").start()
        scheme = "https" if tls else "http"
        yield Proxied(f"{scheme}://127.0.0.1:{pi}", f"{scheme}://127.0.0.1:{pw}",
                      f"http://127.0.0.1:{ip}", f"http://127.0.0.1:{wp}", services, nginx)
    finally:
        if nginx is not None:
            nginx.stop()
        for svc in services:
            svc.stop()


def basic_auth_header() -> str:
    """The test viewer's ``Authorization: Basic`` header line."""
    import base64

    from support import VIEWER_PASSWORD, VIEWER_USER

    cred = base64.b64encode(f"{VIEWER_USER}:{VIEWER_PASSWORD}".encode()).decode()
    return f"Authorization: Basic {cred}\r\n"


def slow_client_scenario(stack: Proxied, jpegs: list[bytes], *, seconds: float,
                         slow: int = 200, viewers: int = 100, fps: float = 5.0) -> dict:
    """Hold ``slow`` slow-body connections on ingest (half with a valid token, half with no
    token) and ``viewers`` MJPEG viewers on web (over cameras v1..v4) for ``seconds``, while a
    sender posts frames of camera ``cam0`` at ``fps`` and /healthz of both services (through
    the proxy and directly) is probed with a 1 s bound. Returns what everyone got."""
    import requests

    from support import FrameSender, post_frame

    session = requests.Session()
    for i in range(1, 5):  # the viewers' cameras exist once they have sent a frame
        resp = post_frame(session, stack.ingest, f"v{i}", f"vtok{i}-16charsfortests", jpegs[0], 1)
        assert resp.status_code in (200, 202), resp.text
    socks: list[socket.socket] = []
    watchers = MjpegViewers(stack.web, [f"/video/v{i}.mjpg" for i in range(1, 5)], viewers,
                            headers=basic_auth_header()).start()
    probes = {"ingest": Probe(stack.ingest + "/healthz"), "web": Probe(stack.web + "/healthz"),
              "ingest_direct": Probe(stack.ingest_direct + "/healthz"),
              "web_direct": Probe(stack.web_direct + "/healthz")}
    sender = FrameSender(stack.ingest, "cam0", "tok0-16charsfortests", jpegs, fps)
    try:
        path = "/api/v1/cameras/cam1/frames"
        socks += slow_body_connections(stack.ingest, path, slow // 2, token="tok1-16charsfortests")
        socks += slow_body_connections(stack.ingest, path, slow - slow // 2, token=None)
        # the load is in place (every viewer answered) before the clock of the bound starts:
        # the burst of 100 logins at once is not what is measured
        end = time.monotonic() + 30
        while sum(watchers.statuses.values()) < viewers and time.monotonic() < end:
            time.sleep(0.1)
        sender.start()
        for p in probes.values():
            p.start()
        time.sleep(seconds)
    finally:
        sender.stop()
        for p in probes.values():
            p.stop()
        watchers.stop()
        close_all(socks)
    sent = len(sender.accepted) + len(sender.failed)
    return {
        "sent": sent, "accepted": len(sender.accepted), "failed": sender.failed[:10],
        "sender_success_ratio": len(sender.accepted) / sent if sent else 0.0,
        "probes": {name: {"url": p.url, "ok": p.ok, "bad": p.late_or_failed[:5],
                          "late": len(p.late_or_failed), "worst_s": p.worst_s}
                   for name, p in probes.items()},
        "viewer_statuses": dict(watchers.statuses), "retry_after": sorted(watchers.retry_after),
        "viewer_bytes": watchers.bytes_read,
    }


# ---- Redis memory under max-size frames ------------------------------------------------------
def max_size_jpeg(limit: int) -> bytes:
    """A real JPEG (noise, quality 90) padded with comment segments to exactly ``limit``
    bytes: the largest frame ingest accepts under CCTV_MAX_FRAME_BYTES=limit."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(7)
    side, best = 32, b""
    while True:
        img = rng.integers(0, 256, (side * 3 // 4, side, 3), dtype=np.uint8)
        jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        if len(jpg) > limit - 8:
            break
        best, side = jpg, side + 16
    assert best, f"no JPEG fits in {limit} bytes"
    pad, out = limit - len(best), bytearray(best[:2])
    while pad > 0:  # COM segments: FF FE, 2-byte length (incl. itself), text
        n = min(pad, 65535 + 2)
        if pad - n in (1, 2, 3):  # a segment needs at least 4 bytes
            n -= 4
        out += b"\xff\xfe" + (n - 2).to_bytes(2, "big") + b"x" * (n - 4)
        pad -= n
    out += best[2:]
    assert len(out) == limit, (len(out), limit)
    return bytes(out)


def memory_token(i: int) -> str:
    """The token of the memory scenario's camera ``m{i}`` (ingest wants 20 characters)."""
    return f"mtok{i:02d}-for-the-memory-test"


def memory_settings(cameras: int, frame_bytes: int, fps: float, frames_maxlen: int) -> dict:
    """CCTV_* settings (lower-case names) of the memory scenario."""
    return {"cameras": ",".join(f"m{i}:{memory_token(i)}" for i in range(cameras)),
            "max_frame_bytes": frame_bytes, "camera_fps_limit": fps,
            "frames_maxlen": frames_maxlen, "det_maxlen": 100, "events_maxlen": 100,
            "events_max_count": 100, "dedup_ttl_s": 60}


def memory_scenario(redis_server, log_dir, *, seconds: float, cameras: int = 16,
                    frame_bytes: int = 256 * 1024, fps: float = 4.0,
                    frames_maxlen: int = 10) -> dict:
    """``cameras`` cameras post max-size frames at their rate limit for ``seconds`` through
    the proxy into a Redis whose maxmemory is the configuration's worst case (noeviction);
    then Redis is made full and frames are posted once more. Returns the figures."""
    from cctv.core.memory import worst_case
    from cctv.settings import load_settings

    cfg = memory_settings(cameras, frame_bytes, fps, frames_maxlen)
    settings = load_settings({f"CCTV_{k.upper()}": str(v) for k, v in cfg.items()})
    maxmemory = worst_case(settings).total
    r = redis_server.client()
    r.config_set("maxmemory", maxmemory)
    r.config_set("maxmemory-policy", "noeviction")
    jpeg = max_size_jpeg(frame_bytes)
    peak = 0
    cams = cfg.pop("cameras")
    with proxied_services(redis_server.url, log_dir, cameras=cams, web=False, **cfg) as stack:
        senders = [StatusSender(stack.ingest, f"m{i}", memory_token(i), jpeg, fps).start()
                   for i in range(cameras)]
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            peak = max(peak, int(r.info("memory")["used_memory"]))
            time.sleep(0.1)
        for s in senders:
            s.stop()
        info = r.info("memory")
        peak = max(peak, int(info["used_memory_peak"]))
        statuses: dict[int, int] = {}
        for snd in senders:
            for code, n in snd.statuses.items():
                statuses[code] = statuses.get(code, 0) + n
        accepted = statuses.get(202, 0) + statuses.get(200, 0)
        # 429: the camera's token bucket (its rate limit), not the memory bound
        failed = sum(n for code, n in statuses.items() if code not in (200, 202, 429))
        # Redis full: maxmemory well below what it holds; every write is refused from now on
        r.config_set("maxmemory", max(1024 * 1024, int(info["used_memory"]) // 2))
        full = [_post_like_sender(stack.ingest, f"m{i}", memory_token(i), jpeg, 10**9 + i)
                for i in range(cameras)]
        metrics = requests_get(stack.ingest_direct + "/metrics")
        r.config_set("maxmemory", maxmemory)
        after = _post_like_sender(stack.ingest, "m0", memory_token(0), jpeg, 2 * 10**9)
        logs = stack.logs()
        alive = all(s.proc.poll() is None for s in stack.services) and \
            redis_server.proc.poll() is None
    return {"maxmemory": maxmemory, "peak": peak, "peak_over_maxmemory": peak / maxmemory,
            "accepted": accepted, "failed": failed, "statuses": statuses, "full_replies": full,
            "after_replies": after, "store_full_metric": _sum_metric(
                metrics, "cctv_ingest_store_full_total"), "alive": alive, "logs": logs,
            "frame_bytes": frame_bytes, "cameras": cameras, "fps": fps, "seconds": seconds}


class StatusSender:
    """Posts one JPEG for a camera at ``fps`` (never catching up after a slow reply, like a
    camera) in a thread; counts the replies by status (0: no reply)."""

    def __init__(self, base: str, camera: str, token: str, jpeg: bytes, fps: float) -> None:
        self.base, self.camera, self.token, self.jpeg, self.fps = base, camera, token, jpeg, fps
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> StatusSender:
        self._thread.start()
        return self

    def _run(self) -> None:
        import requests

        from support import post_frame

        session, seq, nxt = requests.Session(), int(time.time() * 1000), time.monotonic()
        while not self._stop.is_set():
            seq += 1
            try:
                code = post_frame(session, self.base, self.camera, self.token, self.jpeg,
                                  seq).status_code
            except requests.RequestException:
                code, session = 0, requests.Session()
            self.statuses[code] = self.statuses.get(code, 0) + 1
            nxt = max(nxt + 1 / self.fps, time.monotonic())
            self._stop.wait(max(0.0, nxt - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def _post_like_sender(base: str, camera: str, token: str, jpeg: bytes, seq: int):
    """POST one frame with the Pi sender's own client; returns (status, outcome, retry_after)."""
    from cctv_sender.client import IngestClient
    from cctv_sender.frame import Frame

    client = IngestClient(base, camera, token, timeout_s=10)
    try:
        reply = client.post(Frame(jpeg=jpeg, ts_us=time.time_ns() // 1000, seq=seq))
    finally:
        client.close()
    return reply.status, reply.outcome.value, reply.retry_after


def requests_get(url: str) -> str:
    """GET ``url``'s text (10 s timeout)."""
    import requests

    return requests.get(url, timeout=10).text


def _sum_metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))
