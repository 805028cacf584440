"""The operational routes every Flask service exposes: /healthz, /readyz, /metrics."""

from __future__ import annotations

import redis
from flask import Flask, Response, jsonify

from cctv.core.metrics import render_metrics


def add_ops_routes(app: Flask, client: redis.Redis) -> None:
    """Add /healthz (alive), /readyz (Redis answers) and /metrics (Prometheus) to ``app``."""

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
        data, ctype = render_metrics()
        return Response(data, content_type=ctype)
