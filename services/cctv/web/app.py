"""Web: live annotated MJPEG per camera, detections as JSON, health and metrics.

Run with ``cctv web`` (one gunicorn process with many threads: each annotated frame is encoded
once per process and shared by all viewers of that camera).
"""

from __future__ import annotations

import json
import logging

import redis
from flask import Flask, Response, abort, jsonify, render_template, stream_with_context

from cctv.core import keys
from cctv.core.httpops import add_ops_routes
from cctv.core.redisconn import connect
from cctv.core.settings import CAMERA_NAME_RE, Settings, load_settings
from cctv.web.broadcast import Feeds

log = logging.getLogger("cctv.web")

BOUNDARY = "frame"


def _decode(d: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode(errors="replace") for k, v in d.items() if k != b"jpeg"}


def camera_names(client: redis.Redis) -> list[str]:
    """Cameras that have sent frames, sorted."""
    return sorted(c.decode() for c in client.smembers(keys.CAMERAS_ACTIVE))


def latest_result(client: redis.Redis, camera: str) -> dict | None:
    """The newest detection result of ``camera`` with ``dets`` parsed, or None."""
    entries = client.xrevrange(keys.detections(camera), count=1)
    if not entries:
        return None
    out: dict = _decode(entries[0][1])
    out["id"] = entries[0][0].decode()
    out["dets"] = json.loads(out.get("dets", "[]"))
    return out


def create_app(settings: Settings | None = None) -> Flask:
    """The web Flask application."""
    settings = settings or load_settings()
    client = connect(settings.redis_url, name="cctv-web")
    feeds = Feeds(client, settings.mjpeg_quality, settings.viewer_idle_s)
    app = Flask("cctv.web", template_folder="templates")
    app.extensions["cctv_feeds"] = feeds

    def check_camera(camera: str) -> None:
        if not CAMERA_NAME_RE.match(camera):
            abort(404)

    @app.get("/")
    def index() -> str:
        return render_template("index.html", cameras=camera_names(client))

    @app.get("/cameras/<camera>")
    def camera_page(camera: str) -> str:
        check_camera(camera)
        return render_template("camera.html", camera=camera)

    @app.get("/video/<camera>.mjpg")
    def video(camera: str) -> Response:
        check_camera(camera)
        feed = feeds.get(camera)

        def parts():
            for jpeg in feed.frames():
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                       f"Content-Length: {len(jpeg)}\r\n\r\n").encode() + jpeg + b"\r\n"

        resp = Response(stream_with_context(parts()),
                        mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        resp.headers["Cache-Control"] = "no-cache, no-store, must-revalidate"
        resp.headers["X-Accel-Buffering"] = "no"
        return resp

    @app.get("/api/v1/cameras")
    def api_cameras() -> Response:
        out = []
        for cam in camera_names(client):
            stats = _decode(client.hgetall(keys.stats(cam)))
            out.append({"camera": cam, "stats": {k: int(v) for k, v in stats.items()}})
        return jsonify({"cameras": out})

    @app.get("/api/v1/cameras/<camera>/detections/latest")
    def api_latest(camera: str) -> tuple[Response, int]:
        check_camera(camera)
        res = latest_result(client, camera)
        if res is None:
            return jsonify({"error": "not_found", "message": f"no results for {camera!r}"}), 404
        return jsonify(res), 200

    add_ops_routes(app, client)

    return app
