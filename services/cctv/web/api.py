"""The JSON API under /api/v1/ (documented in docs/api/openapi.yaml, served at
/api/v1/openapi.yaml): everything the viewer and the dashboard pages show.

Every input is checked: a malformed camera name or parameter is a 400 with a JSON error, an
unknown camera a 404; nothing here answers 5xx for a bad request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from flask import Blueprint, Response, current_app, g, jsonify, request, send_file, session

from cctv.core import keys
from cctv.core.redis_topology import redis_history
from cctv.core.registry import active_cameras, is_active
from cctv.core.settings import CAMERA_NAME_RE
from cctv.web.broadcast import CameraFeed, Feeds
from cctv.web.camera_stats import CameraStats
from cctv.web.cluster import ClusterMonitor, failover_history
from cctv.web.results import recent_results
from cctv.web.settings import WebSettings
from cctv.web.sse import Event, sse_response

if TYPE_CHECKING:  # limits imports this module's error reply
    from cctv.web.limits import Slots

OPENAPI = Path(__file__).resolve().parent / "openapi.yaml"


class ApiError(Exception):
    """A request that gets a JSON error reply."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> Response:
    """``{"error": code, "message": message}`` with ``status``."""
    resp = jsonify({"error": code, "message": message})
    resp.status_code = status
    return resp


def camera_names(client: redis.Redis) -> list[str]:
    """Cameras that have sent frames and were not removed since, sorted."""
    return active_cameras(client)


def int_param(name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in [low, high]; 400 otherwise."""
    raw = request.args.get(name)
    if raw is None:
        return default
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6 or not low <= int(raw) <= high:
        raise ApiError(400, "bad_parameter", f"{name} must be an integer from {low} to {high}")
    return int(raw)


def bool_param(name: str) -> bool:
    """A boolean query parameter (1/0/true/false); 400 otherwise."""
    raw = request.args.get(name, "0").strip().lower()
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no", ""):
        return False
    raise ApiError(400, "bad_parameter", f"{name} must be true or false")


def create_api(client: redis.Redis, settings: WebSettings, feeds: Feeds, stats: CameraStats,
               monitor: ClusterMonitor, sse_slots: Slots) -> Blueprint:
    """The /api/v1 blueprint; event streams take a slot of ``sse_slots`` (503 when full)."""
    bp = Blueprint("api", __name__, url_prefix="/api/v1")

    @bp.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message)

    def known_camera(camera: str) -> str:
        if not CAMERA_NAME_RE.fullmatch(camera):
            raise ApiError(400, "bad_camera", "camera name must match " + CAMERA_NAME_RE.pattern)
        if not is_active(client, camera):
            raise ApiError(404, "unknown_camera", f"camera {camera!r} has not sent a frame")
        return camera

    def figures(camera: str) -> dict:
        fig = stats.camera(camera)
        if fig is None:  # a camera newer than the last sample
            fig = stats.sample().get(camera)
        return fig or {"camera": camera, "status": "unknown"}

    @bp.get("/me")
    def me() -> Response:
        expires = None
        if g.get("auth") == "session":
            expires = round(session["login_at"] + settings.web_session_hours * 3600, 3)
        return jsonify({"user": g.user, "auth": g.get("auth"), "session_expires": expires})

    @bp.get("/cameras")
    def cameras() -> Response:
        return jsonify({"cameras": [figures(c) for c in camera_names(client)]})

    @bp.get("/cameras/<camera>")
    def camera(camera: str) -> Response:
        known_camera(camera)
        latest = recent_results(client, camera, 1)
        return jsonify({**figures(camera), "latest": latest[0] if latest else None})

    @bp.get("/cameras/<camera>/detections/latest")
    def detections_latest(camera: str) -> Response:
        known_camera(camera)
        latest = recent_results(client, camera, 1)
        if not latest:
            raise ApiError(404, "not_found", f"no results for {camera!r} yet")
        return jsonify(latest[0])

    @bp.get("/cameras/<camera>/detections")
    def detections(camera: str) -> Response:
        known_camera(camera)
        count = int_param("count", 20, 1, 200)
        return jsonify({"camera": camera, "results": recent_results(client, camera, count)})

    def camera_events(feed: CameraFeed, camera: str) -> Iterator[Event | None]:
        updates = feed.updates(kind="sse")
        last_stats = 0.0
        try:
            paused = None
            for frame in updates:
                if frame is not None and frame.raw != paused:
                    paused = frame.raw  # detection paused (raw frames) or annotated again
                    yield "state", {"camera": camera, "paused": paused}
                if frame is not None and not frame.raw:
                    yield "detection", frame.result
                if time.monotonic() - last_stats >= 1.0:
                    last_stats = time.monotonic()
                    yield "stats", stats.camera(camera) or {"camera": camera}
                elif frame is None:
                    yield None
        finally:
            updates.close()

    @bp.get("/cameras/<camera>/stream")
    def camera_stream(camera: str) -> Response:
        known_camera(camera)
        full = sse_slots.acquire()
        if full:
            return sse_slots.refusal(full)
        return sse_response(sse_slots.held(camera_events(feeds.get(camera), camera)),
                            name="camera", max_age_s=settings.web_sse_max_s)

    @bp.get("/cameras/<camera>/snapshot.jpg")
    def snapshot(camera: str) -> Response:
        known_camera(camera)
        download = bool_param("download")
        frame = feeds.get(camera).wait_latest(3.0)
        if frame is None:
            raise ApiError(404, "no_frame", f"no annotated frame of {camera!r} yet")
        resp = Response(frame.jpeg, mimetype="image/jpeg")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        disposition = "attachment" if download else "inline"
        resp.headers["Content-Disposition"] = f'{disposition}; filename="{camera}-{stamp}.jpg"'
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Result-Id"] = str(frame.result.get("id", ""))
        return resp

    @bp.get("/cluster")
    def cluster() -> Response:
        return jsonify(monitor.snapshot())

    def cluster_events() -> Iterator[Event | None]:
        for snap in monitor.updates():
            yield ("cluster", snap) if snap is not None else None

    @bp.get("/cluster/stream")
    def cluster_stream() -> Response:
        full = sse_slots.acquire()
        if full:
            return sse_slots.refusal(full)
        return sse_response(sse_slots.held(cluster_events()), name="cluster",
                            max_age_s=settings.web_sse_max_s)

    @bp.get("/failovers")
    def failovers() -> Response:
        count = int_param("count", 50, 1, 250)
        entries = client.xrevrange(keys.FAILOVERS, count=4 * count)
        return jsonify({"failovers": failover_history(entries, count),
                        "redis": redis_history(entries, count)})

    @bp.get("/openapi.yaml")
    def openapi() -> Response:
        resp = send_file(OPENAPI, mimetype="application/yaml", max_age=0)
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    @bp.app_errorhandler(redis.RedisError)
    def redis_down(exc: redis.RedisError) -> Response:
        current_app.logger.warning("redis error on %s: %s", request.path, exc)
        resp = error_response(503, "unavailable", "the frame store is unavailable; retry")
        resp.headers["Retry-After"] = "1"
        return resp

    return bp
