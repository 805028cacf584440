"""Helpers for the events tests: a real webhook receiver (HTTP server on loopback), waiting
for the events service to catch up, id-switch counting on a results stream, and an environment
in which torch and ultralytics cannot be imported (what the lean CPU image has)."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cctv.core import keys

from support import free_port, wait_for  # noqa: F401 - the tests import it from here


class WebhookReceiver:
    """A local HTTP server that records every POST and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.port = free_port()
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()},
                                              body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def batches(self) -> list[dict]:
        with self.lock:
            return [json.loads(body) for _h, body in self.requests]

    def events(self) -> list[dict]:
        return [e for b in self.batches() for e in b["events"]]


def group_caught_up(rdb, stream: str, group: str) -> bool:
    """True when ``group`` has read and acked everything in ``stream``."""
    last = rdb.xrevrange(stream, count=1)
    if not last:
        return True
    for g in rdb.xinfo_groups(stream):
        if g["name"].decode() == group:
            return g["pending"] == 0 and g["last-delivered-id"] == last[0][0]
    return False


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def track_report(rdb, camera: str, width: int = 640, height: int = 480) -> dict:
    """:func:`track_stats` of a camera's results stream."""
    results = [json.loads(f[b"dets"]) for _i, f in rdb.xrange(keys.detections(camera))]
    return track_stats(results, width, height)


def track_stats(results: list[list[dict]], width: int = 640, height: int = 480) -> dict:
    """Tracks in a sequence of results (each a list of detections) and a proxy for id
    switches: a track that is born where another track of the same class ended within the
    previous 10 results (box overlap > 0.3), away from the frame's edges (where objects really
    enter)."""
    first: dict[int, tuple[int, dict]] = {}
    last: dict[int, tuple[int, dict]] = {}
    tracked = total = 0
    for i, dets in enumerate(results):
        for d in dets:
            total += 1
            t = d.get("track")
            if t is None:
                continue
            tracked += 1
            first.setdefault(t, (i, d))
            last[t] = (i, d)
    switches = 0
    for t, (i, d) in first.items():
        x1, y1, x2, y2 = d["xyxy"]
        if x1 < 8 or y1 < 8 or x2 > width - 8 or y2 > height - 8:
            continue
        for u, (j, e) in last.items():
            if u != t and e["name"] == d["name"] and 0 < i - j <= 10 and \
                    iou(d["xyxy"], e["xyxy"]) > 0.3:
                switches += 1
                break
    return {"results": len(results), "detections": total, "tracked": tracked,
            "tracks": len(first), "id_switches": switches,
            "id_switch_rate": round(switches / max(1, len(first)), 3)}


#: what the lean CPU inference image does not have
#: installed here (the full extra, the dev tools) but not in the lean CPU image; cryptography
#: comes with the TLS scanner of the tests, and redis-py imports it when it is there
NOT_IN_CPU_IMAGE = ("torch", "torchvision", "ultralytics", "scipy", "cryptography")

_BLOCKER = f"""
import sys

_BLOCKED = {NOT_IN_CPU_IMAGE!r}


class _NoTorch:
    \"\"\"Refuses the imports the lean CPU image could not satisfy.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)",
                                      name=name)
        return None


sys.meta_path.insert(0, _NoTorch())
"""


def without_torch(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """``env`` for a Python process in which importing what the lean CPU image lacks
    (:data:`NOT_IN_CPU_IMAGE`: torch, ultralytics, ...) fails as if it were not installed: a
    ``sitecustomize`` on PYTHONPATH puts a finder in front of ``sys.meta_path`` before anything
    else is imported."""
    folder = tmp_path / "no-torch"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(_BLOCKER)
    out = dict(env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH", "")) if p)
    return out


class RawReceiver:
    """A TCP server on loopback that reads each request and answers ``reply`` verbatim (b""
    closes the connection without a word): a receiver that is not a proper HTTP server."""

    def __init__(self, reply: bytes) -> None:
        import socket

        self.reply = reply
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> RawReceiver:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.connections += 1
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    if self.reply:
                        conn.sendall(self.reply)
                except OSError:
                    pass

    def stop(self) -> None:
        self.sock.close()
