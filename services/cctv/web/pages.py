"""The HTML pages (camera grid, camera page, cluster dashboard) and the MJPEG streams.

Pages are rendered once and then kept live by their scripts (static/*.js) over the JSON API
and server-sent events; the MJPEG stream of a camera is the one annotated JPEG per result that
:mod:`cctv.web.broadcast` encodes for every viewer.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from flask import Blueprint, Response, abort, render_template, request, stream_with_context

from cctv.core.mjpeg import MIMETYPE
from cctv.core.registry import is_active
from cctv.core.settings import CAMERA_NAME_RE
from cctv.web.api import camera_names, error_response
from cctv.web.broadcast import Feeds
from cctv.web.limits import Slots

#: a grid with more cameras than this refreshes snapshots instead of holding one MJPEG
#: connection per tile (browsers allow six connections per host over HTTP/1.1)
GRID_MJPEG_MAX = 4


def _headers_first(frames: Iterator[bytes]) -> Iterator[bytes]:
    """An empty first chunk, so the status line and headers go out at once (a viewer, or the
    proxy, knows its stream was accepted before the camera's next frame), then ``frames``."""
    try:
        yield b""
        yield from frames
    finally:
        frames.close()


def create_pages(client: redis.Redis, feeds: Feeds, viewers: Slots,
                 mjpeg_max_s: float) -> Blueprint:
    """The pages blueprint (endpoint names ``pages.*``). MJPEG streams take a slot of
    ``viewers`` (503 when the cap is reached) and end after ``mjpeg_max_s``."""
    bp = Blueprint("pages", __name__)

    def check_camera(camera: str) -> None:
        if not CAMERA_NAME_RE.fullmatch(camera):
            abort(404)

    @bp.get("/")
    def index() -> str:
        cams = camera_names(client)
        return render_template("index.html", cameras=cams,
                               mode="mjpeg" if len(cams) <= GRID_MJPEG_MAX else "snapshot")

    @bp.get("/cameras/<camera>")
    def camera_page(camera: str) -> str:
        check_camera(camera)
        return render_template("camera.html", camera=camera,
                               known=is_active(client, camera))

    @bp.get("/cluster")
    def cluster_page() -> str:
        return render_template("cluster.html")

    @bp.get("/video/<camera>.mjpg")
    def video(camera: str) -> Response:
        if not CAMERA_NAME_RE.fullmatch(camera):
            return error_response(404, "bad_camera", "no such camera")
        if not is_active(client, camera):
            return error_response(404, "unknown_camera", f"camera {camera!r} has not sent a frame")
        # ?clean=1: the camera's frames without boxes (the page's "clean video" switch)
        feed = feeds.get(camera, clean=request.args.get("clean") == "1")
        full = viewers.acquire(camera)
        if full:
            return viewers.refusal(full)
        frames = _headers_first(feed.frames(stop_after=mjpeg_max_s, parts=True))
        resp = Response(stream_with_context(viewers.held(frames, camera)),
                        mimetype=MIMETYPE)
        resp.headers["Cache-Control"] = "no-cache, no-store, must-revalidate"
        resp.headers["X-Accel-Buffering"] = "no"
        return resp

    return bp
