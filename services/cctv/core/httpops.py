"""The operational routes every Flask service exposes: /healthz, /readyz, /metrics."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, jsonify, request

from cctv.core.logthrottle import LogThrottle
from cctv.core.metrics import metrics_authorized, render_metrics

log = logging.getLogger("cctv.health")
_warn = LogThrottle(log, period_s=30.0)

#: the body of /readyz while Redis does not answer: a fixed word, the error only in the log
NOT_READY = {"status": "not ready", "reason": "redis_unavailable"}


def redis_ready(client: redis.Redis) -> bool:
    """True when Redis answers PING; the error of a failure is logged (throttled), never
    returned, so a probe's reply says nothing about the inside."""
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        _warn.warning("readyz", "not ready: redis: %s", exc)
        return False
    return True


def add_ops_routes(app: Flask, client: redis.Redis, metrics_token: str = "") -> None:
    """Add /healthz (alive), /readyz (Redis answers) and /metrics (Prometheus) to ``app``.

    /healthz and /readyz are always open (container healthchecks); /metrics needs
    ``Authorization: Bearer <metrics_token>`` when a token is set (CCTV_METRICS_TOKEN).
    """

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        if not redis_ready(client):
            return jsonify(NOT_READY), 503
        return jsonify({"status": "ready"}), 200

    @app.get("/metrics")
    def metrics() -> Response:
        if not metrics_authorized(metrics_token, request.headers.get("Authorization", "")):
            resp = jsonify({"error": "unauthorized",
                            "message": "send Authorization: Bearer <metrics token>"})
            resp.status_code = 401
            resp.headers["WWW-Authenticate"] = 'Bearer realm="cctv-metrics"'
            return resp
        data, ctype = render_metrics()
        return Response(data, content_type=ctype)
