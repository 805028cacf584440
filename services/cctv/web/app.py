"""Web: the live viewer, the cluster dashboard, the JSON API, health and metrics.

Run with ``cctv web`` (one gunicorn process with many threads: each annotated frame is encoded
once per process and shared by all viewers of that camera; the camera figures and the cluster
snapshot are likewise built once and shared by every page, API client and event stream).

Every route needs a login (:mod:`cctv.web.auth`) except /login, /static, /healthz, /readyz
and /metrics (optionally token-protected).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import redis
from flask import Flask, Response, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from cctv import __version__
from cctv.core.clientaddr import TrustedProxyScheme
from cctv.core.health_thread import start_health_thread
from cctv.core.heartbeat import Heartbeat
from cctv.core.httpops import add_ops_routes
from cctv.core.mjpeg import BOUNDARY
from cctv.core.redisconn import RedisTarget, connect_settings
from cctv.core.settings import trusted_networks
from cctv.web import metrics as web_metrics
from cctv.web.admin import create_admin
from cctv.web.api import camera_names, create_api, error_response
from cctv.web.auth import install_auth, load_accounts
from cctv.web.broadcast import Feeds
from cctv.web.camera_stats import CameraStats
from cctv.web.cluster import ClusterMonitor
from cctv.web.events import create_blueprint as create_events_blueprint
from cctv.web.limits import Slots
from cctv.web.pages import create_pages
from cctv.web.results import recent_results
from cctv.web.settings import WebSettings
from cctv.web.sse import OPEN_STREAMS

log = logging.getLogger("cctv.web")

STATIC = Path(__file__).resolve().parent / "static"
#: static files are served with a long cache lifetime; their URLs carry a content hash
STATIC_MAX_AGE_S = 7 * 24 * 3600

__all__ = ["BOUNDARY", "camera_names", "create_app", "latest_result", "register_blueprints"]


def latest_result(client: redis.Redis, camera: str) -> dict | None:
    """The newest detection result of ``camera`` (API form), or None."""
    results = recent_results(client, camera, 1)
    return results[0] if results else None


def _static_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(STATIC.glob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def register_blueprints(app: Flask, client: redis.Redis, settings: WebSettings) -> None:
    """The blueprints beside the viewer's own pages: the events pages and API
    (``cctv.web.events``, reading what the events service stores). They are protected by the
    global login check like every route."""
    app.register_blueprint(create_events_blueprint(client, settings))


def create_app(settings: WebSettings, *, background: bool = True) -> Flask:
    """The web Flask application. ``background=False`` starts no sampler or heartbeat thread
    (for inspecting the routes)."""
    accounts = load_accounts(settings)
    client = connect_settings(settings, name="cctv-web")
    feeds = Feeds(client, settings.mjpeg_quality, settings.viewer_idle_s,
                  settings.frame_limits, settings.max_frame_bytes,
                  settings.web_detection_paused_s)
    stats = CameraStats(client, settings.camera_silent_s)
    monitor = ClusterMonitor(client, stats, settings.lease_ttl_ms,
                             RedisTarget.from_settings(settings))
    app = Flask("cctv.web", template_folder="templates", static_folder=str(STATIC))
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = STATIC_MAX_AGE_S
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # forms only
    app.extensions.update(cctv_feeds=feeds, cctv_stats=stats, cctv_monitor=monitor,
                          cctv_accounts=accounts)
    install_auth(app, settings, accounts, client)
    # HTTPS at the proxy (X-Forwarded-Proto from CCTV_TRUSTED_PROXIES only) is HTTPS here
    app.wsgi_app = TrustedProxyScheme(app.wsgi_app,  # type: ignore[method-assign]
                                      trusted_networks(settings.trusted_proxies))

    version = _static_version()

    def static_url(filename: str) -> str:
        return url_for("static", filename=filename, v=version)

    # caps on long-lived streams: each holds a thread (cctv/web/limits.py)
    viewers = Slots("mjpeg", settings.web_max_viewers, settings.web_max_viewers_per_camera)
    sse_slots = Slots("sse", settings.web_max_sse_clients)
    app.extensions.update(cctv_viewer_slots=viewers, cctv_sse_slots=sse_slots)
    app.register_blueprint(create_pages(client, feeds, viewers, settings.web_mjpeg_max_s))
    app.register_blueprint(create_api(client, settings, feeds, stats, monitor, sse_slots))
    add_ops_routes(app, client, settings.metrics_token)
    register_blueprints(app, client, settings)
    if settings.admin_token:
        app.register_blueprint(create_admin(client, settings))
    has_events = any(rule.rule == "/events" for rule in app.url_map.iter_rules())
    app.jinja_env.globals.update(static_url=static_url, version=__version__,
                                 has_events=has_events)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response | tuple[str, int]:
        code = (exc.name or "error").lower().replace(" ", "_")
        if request.path.startswith(("/api/", "/video/")) or request.method != "GET":
            return error_response(exc.code or 500, code, exc.description or exc.name)
        return render_template("error.html", status=exc.code, title=exc.name,
                               message=exc.description), exc.code or 500

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        if isinstance(exc, redis.RedisError):
            resp = error_response(503, "unavailable", "the frame store is unavailable; retry")
            resp.headers["Retry-After"] = "1"
            return resp
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error")

    web_metrics.COLLECTOR.sources = (client, stats)
    if background:
        start_health_thread(settings.web_health_bind, client, settings.metrics_token)
        stats.start()
        Heartbeat(client, "web", settings.node, settings.heartbeat_s, fields=lambda: {
            "viewers": feeds.viewer_count(), "sse_clients": OPEN_STREAMS.value}).start()
    return app
