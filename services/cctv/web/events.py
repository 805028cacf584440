"""The events viewer, as a blueprint the web app registers (its login check covers it):

* ``/events``: thumbnails, captions, filters (camera, class, zone, rule, caption words, time);
* ``/events/<id>``: snapshot, crop, details and the clip: the stored MP4 once the events
  service has written it, before that the frames still in ``cctv:frames:{cam}``
  (``/events/<id>/clip.mjpg``);
* ``/events/<id>/snapshot.jpg``, ``/crop.jpg`` and ``/clip.mp4``: the stored files;
* ``/api/v1/events`` (same filters, JSON), ``/api/v1/events/<id>``, ``/api/v1/events/stats``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import redis
from flask import (
    Blueprint,
    Response,
    abort,
    jsonify,
    render_template,
    request,
    send_file,
    stream_with_context,
)

from cctv.core import keys
from cctv.core.annotate import annotate_jpeg
from cctv.core.mjpeg import MIMETYPE, mjpeg_part
from cctv.core.settings import CAMERA_NAME_RE
from cctv.events.clips import clip_detections, clip_frames, clip_range, has_frames
from cctv.events.config import NAME_RE, EventsConfigError, load_config
from cctv.events.settings import EventsSettings
from cctv.events.storage import EVENT_ID_RE, EventStore
from cctv.web.api import error_response

log = logging.getLogger("cctv.web.events")

CLASS_RE = re.compile(r"^[A-Za-z0-9 _.-]{1,64}$")
MAX_LIMIT = 200
CLIP_QUALITY = 75


class BadQuery(ValueError):
    """A query parameter is invalid; the message names it."""


def _time_param(name: str, value: str, tz: ZoneInfo) -> float | None:
    """Epoch milliseconds from ``value``: a number (ms) or an ISO date/time (in ``tz`` when it
    has no offset, as the page's datetime inputs send)."""
    if not value:
        return None
    if re.fullmatch(r"[0-9]{1,15}", value):
        return float(value)
    try:
        dt = datetime.fromisoformat(value)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=tz)
        return dt.timestamp() * 1000
    except (ValueError, OverflowError):
        raise BadQuery(f"{name}={value!r}: use epoch milliseconds or an ISO date/time") from None


def parse_filters(args: dict[str, str], tz: ZoneInfo) -> dict:
    """Validated filters for :meth:`EventStore.query` from query parameters."""
    out: dict = {}
    for name, pattern in (("camera", CAMERA_NAME_RE), ("class", CLASS_RE), ("zone", NAME_RE),
                          ("rule", NAME_RE)):
        value = (args.get(name) or "").strip()
        if value and not pattern.fullmatch(value):
            raise BadQuery(f"{name}={value!r} is not valid")
        out["cls" if name == "class" else name] = value
    text = (args.get("q") or "").strip()
    if len(text) > 200:
        raise BadQuery("q: at most 200 characters")
    out["text"] = text
    out["since_ms"] = _time_param("since", (args.get("since") or "").strip(), tz)
    out["until_ms"] = _time_param("until", (args.get("until") or "").strip(), tz)
    limit = (args.get("limit") or "50").strip()
    if not re.fullmatch(r"[0-9]{1,6}", limit) or not 1 <= int(limit) <= MAX_LIMIT:
        raise BadQuery(f"limit={limit!r}: use 1..{MAX_LIMIT}")
    out["limit"] = int(limit)
    return out


def _public(record: dict) -> dict:
    """A record as the API shows it: file names become URLs."""
    out = dict(record)
    eid = record["id"]
    out["snapshot_url"] = f"/events/{eid}/snapshot.jpg" if record.get("snapshot") else None
    out["crop_url"] = f"/events/{eid}/crop.jpg" if record.get("crop") else None
    out["clip_url"] = f"/events/{eid}/clip.mjpg"
    out["clip_mp4_url"] = f"/events/{eid}/clip.mp4" if record.get("clip") else None
    for name in ("snapshot", "crop", "clip"):
        out.pop(name, None)
    return out


def create_blueprint(client: redis.Redis, settings: EventsSettings) -> Blueprint:
    """The events pages and API on ``client`` (files under ``CCTV_EVENTS_DIR``)."""
    bp = Blueprint("events", __name__, template_folder="templates")
    store = EventStore(client, settings.events_dir, settings.events_maxlen)
    tz, margin_ms = ZoneInfo("UTC"), 2000.0
    if settings.events_config:
        try:
            cfg = load_config(settings.events_config)
            tz, margin_ms = cfg.tz, cfg.clip_margin_s * 1000
        except EventsConfigError as exc:  # the events service reports it; show UTC here
            log.warning("events viewer: %s; showing times in UTC", exc)

    def fmt_time(ms: float | None) -> str:
        if not ms:
            return ""
        return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S")

    def record_or_404(event_id: str) -> dict:
        if not EVENT_ID_RE.fullmatch(event_id):
            abort(404)
        record = store.get(event_id)
        if record is None:
            abort(404)
        return record

    @bp.app_context_processor
    def _nav() -> dict:
        return {"has_events": True}

    @bp.get("/events")
    def events_page() -> str | tuple[str, int]:
        error, limit = "", 50
        try:
            filters = parse_filters(request.args, tz)
            limit = filters["limit"]
            events = store.query(**filters)
        except BadQuery as exc:
            error, events = str(exc), []
        next_until = events[-1]["start_ms"] - 1 if events and len(events) >= limit else None
        return render_template(
            "events/list.html", events=events, error=error, args=request.args,
            fmt_time=fmt_time, tz=str(tz), next_until=next_until,
            cameras=store.facet_values("camera"), classes=store.facet_values("class"),
            zones=store.facet_values("zone"), rules=store.facet_values("rule")), \
            400 if error else 200

    @bp.get("/events/<event_id>")
    def event_page(event_id: str) -> str:
        record = record_or_404(event_id)
        lo, hi = clip_range(record, margin_ms)
        have_mp4 = store.resolve(record.get("clip", "")) is not None
        have_clip = have_mp4 or has_frames(client, record["camera"], lo, hi)
        return render_template("events/detail.html", ev=record, fmt_time=fmt_time, tz=str(tz),
                               have_clip=have_clip, have_mp4=have_mp4)

    def stored_file(event_id: str, kind: str, mimetype: str = "image/jpeg") -> Response:
        record = record_or_404(event_id)
        path = store.resolve(record.get(kind, ""))
        if path is None:
            abort(404)
        # conditional: Range requests, so that a browser can seek in a clip
        return send_file(path, mimetype=mimetype, max_age=3600, conditional=True)

    @bp.get("/events/<event_id>/snapshot.jpg")
    def snapshot(event_id: str) -> Response:
        return stored_file(event_id, "snapshot")

    @bp.get("/events/<event_id>/crop.jpg")
    def crop(event_id: str) -> Response:
        return stored_file(event_id, "crop")

    @bp.get("/events/<event_id>/clip.mp4")
    def clip_mp4(event_id: str) -> Response:
        return stored_file(event_id, "clip", "video/mp4")

    @bp.get("/events/<event_id>/clip.mjpg")
    def clip(event_id: str) -> Response:
        record = record_or_404(event_id)
        cam = record["camera"]
        speed = request.args.get("speed", "1")
        if speed not in ("0", "1", "2", "4"):
            abort(400)
        pace = float(speed)  # 1 = real time, 2/4 = faster, 0 = as fast as the link allows
        lo, hi = clip_range(record, margin_ms)
        dets = clip_detections(client, cam, lo, hi)

        def parts() -> Iterator[bytes]:
            prev_ms = None
            for fid, jpeg in clip_frames(client, cam, lo, hi):
                out = annotate_jpeg(jpeg, dets.get(fid, []), CLIP_QUALITY)
                if out is None:
                    continue
                ms = int(fid.split("-")[0])
                if prev_ms is not None and pace:
                    time.sleep(min(0.2, max(0.0, (ms - prev_ms) / 1000 / pace)))
                prev_ms = ms
                yield mjpeg_part(out)

        if not has_frames(client, cam, lo, hi):
            return Response("the frames of this event are no longer in the stream\n",
                            status=404, mimetype="text/plain")
        resp = Response(stream_with_context(parts()),
                        mimetype=MIMETYPE)
        resp.headers["Cache-Control"] = "no-cache, no-store"
        return resp

    @bp.get("/api/v1/events")
    def api_events() -> Response:
        try:
            filters = parse_filters(request.args, tz)
        except BadQuery as exc:
            return error_response(400, "bad_parameter", str(exc))
        events = store.query(**filters)
        next_until = events[-1]["start_ms"] - 1 if len(events) >= filters["limit"] else None
        return jsonify({"events": [_public(e) for e in events], "count": len(events),
                        "next_until": next_until})

    @bp.get("/api/v1/events/stats")
    def api_stats() -> Response:
        counts = {}
        for cam in store.facet_values("camera"):
            raw = client.hgetall(keys.line_counts(cam))
            if raw:
                counts[cam] = {k.decode(): int(v) for k, v in raw.items()}
        return jsonify({"counters": store.stats(), "line_counts": counts,
                        "stored": client.zcard(keys.EVENTS_INDEX),
                        "generated_at": datetime.now(UTC).isoformat(timespec="seconds")})

    @bp.get("/api/v1/events/<event_id>")
    def api_event(event_id: str) -> Response:
        if not EVENT_ID_RE.fullmatch(event_id):
            return error_response(400, "bad_event_id",
                                  "event id must match " + EVENT_ID_RE.pattern)
        record = store.get(event_id)
        if record is None:
            return error_response(404, "unknown_event", f"no stored event {event_id!r}")
        return jsonify(_public(record))

    return bp
