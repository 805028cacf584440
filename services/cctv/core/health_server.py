"""/healthz, /readyz and /metrics of the services that run no Flask app (inference, events).

Standard library only: the lean inference image has no Flask. The Flask services get the same
routes from :func:`cctv.core.httpops.add_ops_routes`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cctv.core.metrics import metrics_authorized, render_metrics

JSON = "application/json"
#: every path the health server answers (the access matrix test walks them all)
ROUTES = ("/healthz", "/readyz", "/metrics")


def start_health_server(bind: str, ready: Callable[[], tuple[bool, dict]],
                        metrics_token: str = "", reuse_port: bool = False) -> ThreadingHTTPServer:
    """Serve on ``bind`` (``host:port``) in a daemon thread: /healthz (alive), /readyz (200 or
    503 as ``ready()`` says, with its dict as the body) and /metrics (Prometheus; needs
    ``Authorization: Bearer <metrics_token>`` when a token is set, CCTV_METRICS_TOKEN).
    Raises OSError when ``bind`` cannot be listened on. With ``reuse_port`` several processes
    (gunicorn workers) share the port, and each probe reaches one of them."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/healthz":
                self._reply(200, b'{"status":"ok"}', JSON)
            elif self.path == "/readyz":
                ok, body = ready()
                self._reply(200 if ok else 503,
                            json.dumps(body, separators=(",", ":")).encode(), JSON)
            elif self.path == "/metrics":
                if not metrics_authorized(metrics_token, self.headers.get("Authorization", "")):
                    self._reply(401, b'{"error":"unauthorized","message":"send Authorization:'
                                b' Bearer <metrics token>"}', JSON,
                                {"WWW-Authenticate": 'Bearer realm="cctv-metrics"'})
                    return
                data, ctype = render_metrics()
                self._reply(200, data, ctype)
            else:
                self._reply(404, b'{"error":"not_found"}', JSON)

        def _reply(self, status: int, body: bytes, ctype: str,
                   headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        allow_reuse_port = reuse_port

    host, _, port = bind.rpartition(":")
    server = Server((host, int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    return server
