"""The admin API: the camera registry over HTTP, the same actions as ``cctv cameras``.

Served only when CCTV_ADMIN_TOKEN is set (a Docker secret); every request needs
``Authorization: Bearer <admin token>`` (viewer logins do not open it). Failed tokens are
throttled per client address like ingest's camera tokens.

    GET    /api/v1/admin/cameras                  every camera (sources redacted)
    POST   /api/v1/admin/cameras                  add: {"name", "source", "node", "fps",
                                                  "detect"} -> 201 {"camera", "token"}
    GET    /api/v1/admin/cameras/<name>           one camera
    PATCH  /api/v1/admin/cameras/<name>           change source, node, fps, detect
    DELETE /api/v1/admin/cameras/<name>           remove (?keep_s= how long its data stays)
    POST   /api/v1/admin/cameras/<name>/rotate-token   {"finish": false} -> {"token"}
"""

from __future__ import annotations

import hmac
import logging
import math

import redis
from flask import Blueprint, Response, jsonify, request
from prometheus_client import Counter

from cctv.core.clientaddr import client_address
from cctv.core.registry import (
    REMOVED_KEEP_S,
    DetectSettings,
    Registry,
    RegistryError,
    check_name,
    token_digest,
)
from cctv.core.settings import trusted_networks
from cctv.core.throttle import FailureThrottle
from cctv.web.settings import WebSettings

log = logging.getLogger("cctv.web.admin")

ADMIN_REQUESTS = Counter("cctv_web_admin_requests_total", "Admin API requests by outcome",
                         ["outcome"])

_FIELDS = {"name", "source", "node", "fps", "detect"}


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _body(allowed: set[str]) -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise _Refused(400, "bad_body", "send a JSON object (Content-Type: application/json)")
    unknown = set(data) - allowed
    if unknown:
        raise _Refused(400, "bad_body", f"unknown field(s): {', '.join(sorted(unknown))}")
    for name in ("source", "node"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise _Refused(400, "bad_body", f"{name} must be a string")
    fps = data.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, int | float)):
        raise _Refused(400, "bad_body", "fps must be a number")
    return data


def create_admin(client: redis.Redis, settings: WebSettings) -> Blueprint:
    """The admin blueprint (register it only when ``settings.admin_token`` is set)."""
    bp = Blueprint("admin", __name__, url_prefix="/api/v1/admin")
    registry = Registry(client)
    expected = token_digest(settings.admin_token)
    trusted = trusted_networks(settings.trusted_proxies)
    failures = FailureThrottle(10, 60.0)

    @bp.before_request
    def check_token() -> None:
        addr = client_address(request.remote_addr, request.headers.get("X-Real-IP"), trusted)
        wait = failures.blocked_for(addr)
        if wait > 0:
            raise _Refused(429, "too_many_failures", "too many failed admin tokens; wait",
                           **{"Retry-After": str(max(1, math.ceil(wait)))})
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token_digest(token.strip()),
                                                                 expected):
            failures.failed(addr)
            log.warning("admin API: refused a request from %s (missing or wrong token)", addr)
            raise _Refused(401, "unauthorized", "send Authorization: Bearer <admin token>",
                           **{"WWW-Authenticate": 'Bearer realm="cctv-admin"'})

    @bp.errorhandler(_Refused)
    def refused(exc: _Refused) -> Response:
        ADMIN_REQUESTS.labels("refused").inc()
        resp = jsonify({"error": exc.code, "message": exc.message})
        resp.status_code = exc.status
        resp.headers.update(exc.headers)
        return resp

    @bp.errorhandler(RegistryError)
    def invalid(exc: RegistryError) -> Response:
        ADMIN_REQUESTS.labels("invalid").inc()
        status = 404 if str(exc).startswith("no camera") else \
            409 if "already" in str(exc) else 400
        resp = jsonify({"error": "invalid", "message": str(exc)})
        resp.status_code = status
        return resp

    def ok(payload: dict, status: int = 200) -> Response:
        ADMIN_REQUESTS.labels("ok").inc()
        resp = jsonify(payload)
        resp.status_code = status
        return resp

    def detect_of(data: dict, old: DetectSettings | None = None) -> DetectSettings | None:
        if "detect" not in data:
            return old
        return DetectSettings.from_json(data["detect"])

    @bp.get("/cameras")
    def list_cameras() -> Response:
        cams = registry.all()
        return ok({"cameras": [cams[n].public() for n in sorted(cams)]})

    @bp.post("/cameras")
    def add_camera() -> Response:
        data = _body(_FIELDS)
        name = check_name(data.get("name", ""))
        cam, token = registry.add(name, source=data.get("source"), node=data.get("node"),
                                  fps=data.get("fps"), detect=detect_of(data))
        log.info("admin API: camera %s added", name)
        return ok({"camera": cam.public(), "token": token}, 201)

    @bp.get("/cameras/<name>")
    def show_camera(name: str) -> Response:
        cam = registry.get(check_name(name))
        if cam is None:
            raise RegistryError(f"no camera {name!r} in the registry")
        return ok({"camera": cam.public()})

    @bp.patch("/cameras/<name>")
    def change_camera(name: str) -> Response:
        data = _body(_FIELDS - {"name"})
        old = registry.get(check_name(name))
        if old is None:
            raise RegistryError(f"no camera {name!r} in the registry")
        fields = {k: data[k] for k in ("source", "node", "fps") if k in data}
        fields["detect"] = detect_of(data, old.detect)
        cam = registry.update(name, **fields)
        log.info("admin API: camera %s changed (%s)", name, ", ".join(sorted(data)) or "nothing")
        return ok({"camera": cam.public()})

    @bp.delete("/cameras/<name>")
    def remove_camera(name: str) -> Response:
        raw = request.args.get("keep_s", str(REMOVED_KEEP_S))
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 30 * 86400:
            raise _Refused(400, "bad_parameter", "keep_s must be 1 to 2592000 seconds")
        if not registry.remove(check_name(name), keep_s=int(raw)):
            raise RegistryError(f"no camera {name!r} in the registry")
        log.info("admin API: camera %s removed", name)
        return ok({"removed": name, "data_expires_s": int(raw)})

    @bp.post("/cameras/<name>/rotate-token")
    def rotate(name: str) -> Response:
        data = request.get_json(silent=True) or {}
        if not isinstance(data, dict) or set(data) - {"finish"}:
            raise _Refused(400, "bad_body", 'send {} or {"finish": true}')
        if data.get("finish") is True:
            return ok({"camera": registry.finish_rotation(check_name(name)).public()})
        cam, token = registry.rotate_token(check_name(name))
        log.info("admin API: camera %s got a new token (the old one stays valid until used)",
                 name)
        return ok({"camera": cam.public(), "token": token})

    return bp
