"""The operational routes every Flask service exposes: /healthz, /readyz, /metrics."""

from __future__ import annotations

import redis
from flask import Flask, Response, jsonify, request

from cctv.core.metrics import metrics_authorized, render_metrics


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
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            return jsonify({"status": "not ready", "redis": str(exc)}), 503
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
