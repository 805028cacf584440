"""Helpers of the web tests: a running system of real processes and small HTTP helpers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import requests

from cctv.core import keys

from support import (
    MODEL_OPENVINO,
    VIEWER_PASSWORD,
    VIEWER_USER,
    FrameSender,
    RedisServer,
    Service,
    clip_jpegs,
    free_port,
    service_env,
    start_listening,
    wait_for,  # noqa: F401 - the web tests import it from here
    wait_port,
)

CAMERAS = "cam1:tok1-16charsfortests,cam2:tok2-16charsfortests"
AUTH = (VIEWER_USER, VIEWER_PASSWORD)


class WebStack:
    """redis (given) + ingest + inference replicas + web + camera senders, real processes."""

    def __init__(self, redis_server: RedisServer, tmp: Path, replicas: tuple[str, ...] = ("a",),
                 **web_settings: object) -> None:
        self.redis_server, self.tmp = redis_server, tmp
        self.rdb = redis_server.client()
        self.services: list[Service] = []
        self.replicas: dict[str, Service] = {}
        self.inference_binds: dict[str, str] = {}
        self.senders: list[FrameSender] = []
        self.ingest_port = free_port()
        self.ingest = self._start(["ingest"], "ingest", cameras=CAMERAS, ingest_workers=1,
                                  ingest_bind=f"127.0.0.1:{self.ingest_port}")
        for name in replicas:
            self.replica(name)
        self.web_port = free_port()
        self.web = self._start(["web"], "web", cameras=CAMERAS,
                               web_bind=f"127.0.0.1:{self.web_port}", **web_settings)
        self.url = f"http://127.0.0.1:{self.web_port}"
        wait_port(self.ingest_port, 30, self.ingest.proc)
        wait_port(self.web_port, 30, self.web.proc)

    def _start(self, args: list[str], name: str, **cctv: object) -> Service:
        svc = Service(args, service_env(self.redis_server.url, **cctv), self.tmp, name)
        self.services.append(svc)
        return svc

    def replica(self, name: str, **cctv: object) -> Service:
        """Start an inference replica (OpenVINO: fast on CPU) named ``name``."""
        bind = self.inference_binds[name] = f"127.0.0.1:{free_port()}"
        svc = self._start(["inference", "--id", name], f"inference-{name}", cameras=CAMERAS,
                          model=MODEL_OPENVINO, inference_http_bind=bind, **cctv)
        self.replicas[name] = svc
        return svc

    def start_web(self, name: str, **cctv: object) -> tuple[str, Service]:
        """One more web process on the same Redis (other settings)."""
        port, svc = start_listening(lambda port: self._start(
            ["web"], f"{name}-{port}", cameras=CAMERAS, web_bind=f"127.0.0.1:{port}", **cctv))
        return f"http://127.0.0.1:{port}", svc

    def leader(self) -> str | None:
        value = self.rdb.get(keys.LEASE_INFERENCE)
        return value.decode() if value else None

    def send(self, cameras: tuple[str, ...] = ("cam1",), fps: float = 8) -> None:
        """Stream the sample clip from each camera."""
        jpegs = clip_jpegs(n=90, step=3)
        url = f"http://127.0.0.1:{self.ingest_port}"
        tokens = dict(c.split(":") for c in CAMERAS.split(","))
        self.senders += [FrameSender(url, cam, tokens[cam], jpegs, fps).start()
                         for cam in cameras]

    def results(self, camera: str = "cam1") -> int:
        """Frames of ``camera`` processed so far (the cluster-wide counter)."""
        return int(self.rdb.hget(keys.stats(camera), "processed") or 0)

    def save_logs(self, dest: Path) -> None:
        for svc in self.services:
            if svc.log_path.exists():
                (dest / svc.log_path.name).write_text(svc.log())

    def close(self) -> None:
        for s in self.senders:
            s.stop()
        for svc in reversed(self.services):
            svc.signal(signal.SIGCONT)
            svc.stop()
        self.rdb.close()


def api(stack: WebStack, path: str, **kw) -> requests.Response:
    """GET ``path`` on the stack's web with the test viewer's Basic credentials."""
    kw.setdefault("timeout", 10)
    kw.setdefault("auth", AUTH)
    return requests.get(stack.url + path, **kw)



def login(page, base_url: str, user: str = VIEWER_USER, password: str = VIEWER_PASSWORD,
          path: str = "/") -> None:
    """Log in through the form like a person does, landing on ``path``."""
    page.goto(base_url + "/login?next=" + path)
    page.fill("#user", user)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(base_url + path)


DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def save_screenshot(png: bytes, dest: Path, max_bytes: int = 300_000, docs: bool = True
                    ) -> Path:
    """Write a screenshot as a small PNG (256 colours) to ``dest``; with the environment
    variable UPDATE_DOCS_SCREENSHOTS=1 and ``docs`` also to docs/screenshots/ (what
    docs/web.md shows)."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    small = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    small.save(buf, "PNG", optimize=True)
    if buf.tell() > max_bytes:  # photo-heavy: fewer colours
        buf = io.BytesIO()
        img.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
    dest.write_bytes(buf.getvalue())
    if docs and os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (DOCS_SCREENSHOTS / dest.name).write_bytes(buf.getvalue())
    return dest
