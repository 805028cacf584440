"""Ingest: accepts JPEG frames over HTTP and appends them to the camera's Redis stream.

``POST /api/v1/cameras/<camera>/frames`` with an ``image/jpeg`` body and headers:

* ``Authorization: Bearer <camera token>``
* ``X-Frame-Seq``: the sender's sequence number (non-negative integer, unique per camera)
* ``X-Capture-Ts``: capture time in microseconds since the Unix epoch (sender clock)
* ``X-Frame-Late: 1`` (optional): the frame was spooled during an outage and is sent late
* ``X-Clock-Unsynced: 1`` (optional): the sender's clock was not synchronised at capture, so
  ``X-Capture-Ts`` may be off (counted in ``cctv_ingest_frames_clock_unsynced_total``)

The names are in ``core/wire.py``, which the sender's copy must match.

Replies: 202 ``{"id": ...}`` for a new frame, 200 with ``"duplicate": true`` for a repeated
(camera, seq), and a JSON error with 400/401/403/413/415/429 otherwise; an unknown camera and
a wrong token get the same 403, byte for byte (no oracle of which cameras exist; the two are
counted apart in ``cctv_ingest_refused_total{reason}`` and told apart in the log); 429 also when the
client address sent too many bad tokens, 503 + Retry-After when the frame store is unreachable
or full (Redis at its ``maxmemory``). The body is never decoded: the JPEG markers and the frame
header give validity and size, and a frame over CCTV_MAX_FRAME_WIDTH/HEIGHT/PIXELS (413) or of
a JPEG variant OpenCV does not decode (415) is refused before it is stored (core/jpeg.py).
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable

import redis
from flask import Flask, Response, jsonify, request
from prometheus_client import Counter, Histogram

from cctv.core import keys, wire
from cctv.core.clientaddr import client_address
from cctv.core.entries import EntryError, encode_frame, parse_uint
from cctv.core.health_thread import start_health_thread
from cctv.core.heartbeat import Heartbeat
from cctv.core.httpops import add_ops_routes
from cctv.core.jpeg import JpegError, jpeg_info
from cctv.core.redisconn import (
    REDIS_DOWN_ERRORS,
    NotReplicated,
    connect_settings,
    durable,
    is_noreplicas_error,
)
from cctv.core.registry import Registry, RegistryCache, RegistryError, Snapshot, token_digest
from cctv.core.scripts import Scripts
from cctv.core.settings import CAMERA_NAME_RE, trusted_networks
from cctv.core.throttle import FailureThrottle
from cctv.core.tokens import check_token_lengths
from cctv.ingest.settings import IngestSettings

log = logging.getLogger("cctv.ingest")

REQUESTS = Counter("cctv_ingest_requests_total", "Frame POSTs by HTTP status", ["status"])
FRAMES = Counter("cctv_ingest_frames_total", "Frames accepted", ["camera"])
BYTES = Counter("cctv_ingest_bytes_total", "JPEG bytes accepted", ["camera"])
LATENCY = Histogram(
    "cctv_ingest_request_seconds", "Time to handle a frame POST",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)

AUTH_THROTTLED = Counter("cctv_ingest_auth_throttled_total",
                         "Frame POSTs refused because their address sent too many bad tokens")
AUTH_FAILED = Counter("cctv_ingest_auth_failed_total", "Frame POSTs with a missing or bad token")
REFUSED = Counter("cctv_ingest_refused_total",
                  "Frame POSTs refused by the token check, by reason (the reply is the same "
                  "403 for unknown_camera and bad_token)", ["reason"])
for _reason in ("no_token", "unknown_camera", "bad_token", "removed"):
    REFUSED.labels(_reason)
UNSYNCED = Counter("cctv_ingest_frames_clock_unsynced_total",
                   "Frames whose sender said its clock was not yet synchronised at capture")
STORE_FULL = Counter("cctv_ingest_store_full_total",
                     "Frame POSTs refused because Redis refused writes (maxmemory reached)")

UNREPLICATED = Counter("cctv_ingest_unreplicated_total",
                       "Frame POSTs answered 503 because the frame could not be made durable on "
                       "a replica: timeout (WAIT ran out; the frame may be on the primary, a "
                       "resend is answered as a duplicate) or noreplicas (the primary refuses "
                       "writes: min-replicas-to-write)", ["reason"])
for _reason in ("timeout", "noreplicas"):
    UNREPLICATED.labels(_reason)

#: a full frame store is logged at most this often (with the count since the last line)
STORE_FULL_LOG_EVERY_S = 10.0


class Rejection(Exception):
    """A request that gets a JSON error reply."""

    def __init__(self, status: int, code: str, message: str, *, log_detail: str = "",
                 **headers: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers
        #: what the log says beyond the reply (the reply itself must not tell it)
        self.log_detail = log_detail


#: the one reply to a token that does not open the camera, whether the camera exists or not
FORBIDDEN_MESSAGE = "token not valid for this camera"


class ReplyCounts:
    """Frame POST replies by HTTP status, counted in memory and added to Redis by the heartbeat.

    The request path only bumps a local counter (no Redis round trip); once per heartbeat the
    counts since the last flush go to ``cctv:ingest:responses`` (totals) and the current minute's
    hash, so the dashboard sees cluster-wide counts. A failed flush keeps the counts for the next.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: Tally[int] = Tally()
        self._totals: Tally[int] = Tally()
        self._last: tuple[float, Tally[int]] = (time.monotonic(), Tally())

    def add(self, status: int) -> None:
        """Count one reply."""
        with self._lock:
            self._pending[status] += 1
            self._totals[status] += 1

    def flush_into(self, pipe: redis.client.Pipeline) -> Callable[[bool], None]:
        """Queue HINCRBYs of the unflushed counts on ``pipe``; call the result with success."""
        with self._lock:
            batch, self._pending = self._pending, Tally()
        if batch:
            minute_key = keys.ingest_responses_minute(int(time.time() // 60))
            for status, n in batch.items():
                pipe.hincrby(keys.INGEST_RESPONSES, str(status), n)
                pipe.hincrby(minute_key, str(status), n)
            pipe.expire(minute_key, keys.INGEST_RESPONSES_MINUTE_TTL_S)

        def done(ok: bool) -> None:
            if not ok and batch:
                with self._lock:
                    self._pending.update(batch)

        return done

    def rates(self) -> dict[str, object]:
        """Requests, accepted frames and errors per second since the previous call."""
        now = time.monotonic()
        with self._lock:
            totals = self._totals.copy()
        then, before = self._last
        self._last = (now, totals)
        dt = max(now - then, 1e-3)
        diff = totals - before
        return {"requests_per_s": f"{sum(diff.values()) / dt:.2f}",
                "accepted_per_s": f"{diff[202] / dt:.2f}",
                "errors_per_s": f"{sum(n for s, n in diff.items() if s >= 400) / dt:.2f}",
                "requests_total": sum(totals.values())}


def _int_header(name: str, *, required: bool) -> int | None:
    raw = request.headers.get(name)
    if raw is None or raw == "":
        if required:
            raise Rejection(400, "missing_header", f"header {name} is required")
        return None
    try:
        return parse_uint(raw.strip(), name)
    except EntryError:
        raise Rejection(400, "bad_header",
                        f"header {name} must be a non-negative integer (ASCII digits)") from None


def _flag_header(name: str) -> str:
    value = request.headers.get(name, "0").strip()
    if value not in ("0", "1"):
        raise Rejection(400, "bad_header", f"header {name} must be 0 or 1")
    return value


#: reply of each kind of refused JPEG (JpegError.kind)
_JPEG_REPLIES = {"malformed": (400, "bad_jpeg"), "unsupported": (415, "unsupported_jpeg"),
                 "too_large": (413, "frame_too_large")}


class Ingest:
    """The request handling of one ingest process."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.redis = connect_settings(settings, name="cctv-ingest")
        self.scripts = Scripts(self.redis)
        check_token_lengths(settings)
        # the secret's tokens: the seed of the registry, and what opens a camera until the
        # registry could be read once
        self.seed_tokens = settings.camera_tokens
        # every token is compared as its SHA-256 hex digest, the form the registry stores
        self.tokens = {cam: token_digest(tok) for cam, tok in self.seed_tokens.items()}
        self.default_token = token_digest(settings.ingest_token) if settings.ingest_token \
            else None
        self.capture_token = token_digest(settings.capture_token) if settings.capture_token \
            else None
        self.registry = RegistryCache(self.redis)
        self._seed_tried = self._seed_warned = -1e9
        self._seed_checked: Snapshot | None = None
        # compared against when the camera is unknown, so both refusals cost the same work
        self._no_camera = token_digest(secrets.token_urlsafe(32))
        self.trusted = trusted_networks(settings.trusted_proxies)
        self.auth_failures = FailureThrottle(settings.ingest_auth_fail_limit,
                                             settings.ingest_auth_fail_window_s)
        self._full_lock = threading.Lock()
        self._full_since_log, self._full_logged_at = 0, 0.0

    def client(self) -> str:
        """The client's address (the proxy's X-Real-IP when the peer is a trusted proxy)."""
        return client_address(request.remote_addr, request.headers.get("X-Real-IP"), self.trusted)

    def authorize(self, camera: str) -> None:
        """Raise a 400/401/403/429 :class:`Rejection` unless the request may post for
        camera. Failed tokens count against the client address; an address over
        CCTV_INGEST_AUTH_FAIL_LIMIT within the window gets 429 before its token is looked at."""
        if not CAMERA_NAME_RE.fullmatch(camera):
            raise Rejection(400, "bad_camera", "camera name must match " + CAMERA_NAME_RE.pattern)
        addr = self.client()
        wait = self.auth_failures.blocked_for(addr)
        if wait > 0:
            AUTH_THROTTLED.inc()
            raise Rejection(429, "too_many_bad_tokens",
                            f"too many failed tokens from {addr}; retry later",
                            **{"Retry-After": str(max(1, math.ceil(wait)))})
        try:
            self._check_token(camera)
        except Rejection:
            AUTH_FAILED.inc()
            self.auth_failures.failed(addr)
            raise

    def store_full(self, exc: Exception) -> None:
        """Count (and log, at most every few seconds) a write Redis refused for memory."""
        STORE_FULL.inc()
        now = time.monotonic()
        with self._full_lock:
            self._full_since_log += 1
            if now - self._full_logged_at < STORE_FULL_LOG_EVERY_S:
                return
            n, self._full_since_log, self._full_logged_at = self._full_since_log, 0, now
        log.error("frame store full: Redis refused %d frame write(s) (%s); senders are told "
                  "to retry (503). Raise Redis maxmemory or lower CCTV_FRAMES_MAXLEN / "
                  "CCTV_MAX_FRAME_BYTES", n, exc)

    def snapshot(self, force: bool = False) -> Snapshot:
        """The registry copy. Cameras of CCTV_CAMERAS the registry lacks (first start, or a
        Redis that lost its data) are seeded again, at most once a second."""
        snap = self.registry.snapshot(force=force)
        if snap is self._seed_checked:  # the same copy as last time: checked already
            return snap
        if not self.seed_tokens or not self._needs_seed(snap):
            self._seed_checked = snap
        elif time.monotonic() - self._seed_tried >= 1.0:
            self._seed_tried = time.monotonic()
            try:
                Registry(self.redis).seed(self.seed_tokens)
                self.registry.invalidate()
                snap = self.registry.snapshot()
            except redis.RedisError as exc:
                if time.monotonic() - self._seed_warned >= 60.0:  # Redis down says it anyway
                    self._seed_warned = time.monotonic()
                    log.warning("camera registry not seeded from CCTV_CAMERAS yet (%s); "
                                "retrying every second", exc)
        return snap

    def _needs_seed(self, snap: Snapshot) -> bool:
        if not snap.loaded:
            return True
        for cam, digest in self.tokens.items():
            entry = snap.cameras.get(cam)
            if entry is None and cam not in snap.removed:
                return True
            if entry is not None and entry.seeded and digest not in entry.tokens:
                return True
        return False

    def _expected(self, camera: str, snap: Snapshot) -> tuple[list[str], bool]:
        """The token digests that open ``camera`` and whether the camera is known."""
        entry = snap.cameras.get(camera)
        if entry is not None:
            digests = list(entry.tokens)
            if entry.source and self.capture_token is not None:
                digests.append(self.capture_token)
            return digests, True
        if camera in snap.removed:
            return [], False
        # not in the registry (Redis not answering yet, or it lost its data and the seed is
        # on its way): the secret's token still opens a camera of the secret
        expected = self.tokens.get(camera)
        if expected is not None:
            return [expected], True
        if not self.settings.cameras_strict and self.default_token is not None:
            return [self.default_token], True
        return [], False

    def _check_token(self, camera: str) -> None:
        auth = request.headers.get(wire.HEADER_AUTH, "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            REFUSED.labels("no_token").inc()
            raise Rejection(401, "unauthorized", "send Authorization: Bearer <camera token>",
                            **{"WWW-Authenticate": 'Bearer realm="cctv-ingest"'})
        digest = token_digest(token.strip())
        snap = self.snapshot()
        match, known = self._match(camera, snap, digest)
        if match is None and snap.loaded:
            # a camera added or a token rotated a moment ago: check the registry's version
            # again (one GET; the entries are read only when it moved)
            snap = self.snapshot(force=True)
            match, known = self._match(camera, snap, digest)
        if match is None:
            reason = "bad_token" if known else "unknown_camera"
            REFUSED.labels(reason).inc()
            raise Rejection(403, "forbidden", FORBIDDEN_MESSAGE, log_detail=reason)
        entry = snap.cameras.get(camera)
        if entry is not None and len(entry.tokens) > 1 and match == entry.tokens[-1]:
            self._confirm_rotation(camera, match)

    def _match(self, camera: str, snap: Snapshot, digest: str) -> tuple[str | None, bool]:
        """The digest among those that open ``camera`` that ``digest`` equals (or None), and
        whether the camera is known. Every candidate is compared, and an unknown camera costs
        one comparison too."""
        expected, known = self._expected(camera, snap)
        found = None
        for candidate in expected or [self._no_camera]:
            if hmac.compare_digest(digest, candidate) and known:
                found = candidate
        return found, known

    def _confirm_rotation(self, camera: str, digest: str) -> None:
        """The camera sent with its new token: the old one can go."""
        try:
            Registry(self.redis).confirm_token(camera, digest)
            self.registry.invalidate()
        except (redis.RedisError, RegistryError) as exc:
            log.warning("camera %s: could not retire its old token yet (%s)", camera, exc)

    def read_body(self) -> bytes:
        """The request body, refusing (413) before reading when it is over the limit."""
        limit = self.settings.max_frame_bytes
        ctype = (request.mimetype or "").lower()
        if ctype != wire.FRAME_CONTENT_TYPE:
            raise Rejection(415, "unsupported_media_type",
                            f"Content-Type must be {wire.FRAME_CONTENT_TYPE}, got "
                            f"{ctype or 'none'!r}")
        length = request.content_length
        if length is not None and length > limit:
            raise Rejection(413, "too_large", f"frame of {length} bytes is over the {limit} limit",
                            Connection="close")
        # Chunked or lying Content-Length: never read more than limit + 1 bytes.
        body = request.stream.read(limit + 1)
        if len(body) > limit:
            raise Rejection(413, "too_large", f"frame is over the {limit} byte limit",
                            Connection="close")
        if not body:
            raise Rejection(400, "empty_body", "the body is empty; send one JPEG image")
        return body

    def post_frame(self, camera: str) -> tuple[dict, int]:
        """Validate and append one frame; returns the JSON reply and status."""
        rx_us = time.time_ns() // 1000
        self.authorize(camera)
        body = self.read_body()
        seq = _int_header(wire.HEADER_SEQ, required=True)
        ts = _int_header(wire.HEADER_CAPTURE_TS, required=True)
        late = _flag_header(wire.HEADER_LATE)
        if _flag_header(wire.HEADER_CLOCK_UNSYNCED) == "1":
            UNSYNCED.inc()
        try:
            info = jpeg_info(body, self.settings.frame_limits)
        except JpegError as exc:
            status, code = _JPEG_REPLIES[exc.kind]
            raise Rejection(status, code, str(exc)) from None
        width, height = info.width, info.height
        s = self.settings
        rate = s.camera_fps_limit
        args = [camera, seq, late, s.frames_maxlen, s.dedup_ttl_s, rate, max(1.0, rate),
                keys.INFER_GROUP,
                *encode_frame(body, seq=seq, ts=ts, w=width, h=height, rx=rx_us,
                              late=late == "1")]
        # The script and, with replicas to wait for, WAIT in one round trip: 202 (and 200 for a
        # duplicate, whose WAIT covers the first copy too) only once a replica has the frame.
        (status, entry_id), = durable(
            self.redis, s.redis_min_replicas_ack, s.redis_wait_timeout_ms,
            lambda pipe: self.scripts.ingest(
                keys=[keys.frames(camera), keys.stats(camera), keys.dedup(camera, seq),
                      keys.ratelimit(camera), keys.CAMERAS_ACTIVE, keys.drops(camera),
                      keys.frame_index(camera), keys.CAMERAS_REMOVED,
                      keys.capture_floor(camera)],
                args=args, client=pipe))
        entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        if status == b"removed":
            REFUSED.labels("removed").inc()
            raise Rejection(403, "forbidden", FORBIDDEN_MESSAGE, log_detail="removed")
        if status == b"fenced":
            raise Rejection(409, "fenced", f"another capture instance now pulls camera "
                            f"{camera!r}; frames with seqs below its own are refused")
        if status == b"rate":
            raise Rejection(429, "rate_limited",
                            f"camera {camera!r} is over its limit of {rate:g} frames/s",
                            **{"Retry-After": "1"})
        label = camera if camera in self.registry.snapshot().cameras else "_other"
        if status == b"dup":
            return {"id": entry, "camera": camera, "seq": seq, "duplicate": True}, 200
        FRAMES.labels(label).inc()
        BYTES.labels(label).inc(len(body))
        return {"id": entry, "camera": camera, "seq": seq, "duplicate": False,
                "width": width, "height": height}, 202


def create_app(settings: IngestSettings) -> Flask:
    """The ingest Flask application (``cctv ingest`` serves it with the loaded settings)."""
    ingest = Ingest(settings)
    replies = ReplyCounts()
    heartbeat = Heartbeat(ingest.redis, "ingest", settings.node, settings.heartbeat_s,
                          fields=replies.rates, on_beat=replies.flush_into).start()
    app = Flask("cctv.ingest", static_folder=None)  # no static files: no /static route
    app.config["MAX_CONTENT_LENGTH"] = None  # we enforce the limit ourselves, with a JSON reply
    app.extensions["cctv_ingest"] = ingest
    app.extensions["cctv_heartbeat"] = heartbeat

    @app.post(wire.FRAMES_PATH.replace("{camera}", "<camera>"))
    def post_frame(camera: str) -> Response:
        started = time.perf_counter()
        try:
            body, status = ingest.post_frame(camera)
            resp = jsonify(body)
            resp.status_code = status
        except Rejection as rej:
            log.warning("rejected frame for %s: %s %s%s", camera[:64], rej.status, rej.message,
                        f" ({rej.log_detail})" if rej.log_detail else "",
                        extra={"camera": camera[:64], "status": rej.status, "code": rej.code,
                               "reason": rej.log_detail or rej.code})
            resp = jsonify({"error": rej.code, "message": rej.message})
            resp.status_code = rej.status
            for name, value in rej.headers.items():
                resp.headers[name] = value
        except NotReplicated as exc:
            UNREPLICATED.labels("timeout").inc()
            log.warning("frame for %s not acknowledged: %s", camera[:64], exc)
            resp = jsonify({"error": "not_replicated",
                            "message": "frame not yet durable on a replica; retry"})
            resp.status_code = 503
            resp.headers["Retry-After"] = "1"
        except REDIS_DOWN_ERRORS as exc:
            log.error("redis unavailable: %s", exc)
            resp = jsonify({"error": "unavailable", "message": "frame store unavailable; retry"})
            resp.status_code = 503
            resp.headers["Retry-After"] = "1"
        except redis.ResponseError as exc:
            if isinstance(exc, redis.OutOfMemoryError):
                ingest.store_full(exc)
                resp = jsonify({"error": "store_full",
                                "message": "frame store is full; keep the frame and retry"})
                resp.status_code = 503
                resp.headers["Retry-After"] = "2"
            elif is_noreplicas_error(exc):
                UNREPLICATED.labels("noreplicas").inc()
                log.error("frame store refuses writes (too few replicas): %s", exc)
                resp = jsonify({"error": "no_replicas",
                                "message": "frame store has no replica; retry"})
                resp.status_code = 503
                resp.headers["Retry-After"] = "1"
            else:
                raise
        REQUESTS.labels(str(resp.status_code)).inc()
        replies.add(resp.status_code)
        LATENCY.observe(time.perf_counter() - started)
        return resp

    add_ops_routes(app, ingest.redis, settings.metrics_token)
    start_health_thread(settings.ingest_health_bind, ingest.redis, settings.metrics_token)

    @app.errorhandler(404)
    def not_found(_exc: Exception) -> tuple[Response, int]:
        return jsonify({"error": "not_found", "message": "no such route"}), 404

    @app.errorhandler(405)
    def not_allowed(_exc: Exception) -> tuple[Response, int]:
        return jsonify({"error": "method_not_allowed", "message": "method not allowed"}), 405

    @app.errorhandler(500)
    def internal(_exc: Exception) -> tuple[Response, int]:
        return jsonify({"error": "internal", "message": "internal error"}), 500

    return app
