"""/healthz and /readyz of the gunicorn services (ingest, web) on a port of their own, served
by a thread that no request can occupy: while every request thread is busy (a slow Redis, a
burst), the container health check is still answered, so Swarm does not restart a service that
is only busy. Every gunicorn worker of a service listens on the same port (SO_REUSEPORT)."""

from __future__ import annotations

import logging

import redis

from cctv.core.health_server import start_health_server
from cctv.core.httpops import NOT_READY, redis_ready

log = logging.getLogger("cctv.health")


def start_health_thread(bind: str, client: redis.Redis, metrics_token: str) -> None:
    """Serve /healthz, /readyz (Redis answers) and /metrics on ``bind`` when it is set. A port
    that cannot be listened on is logged, not fatal: the service's own /healthz still works."""
    if not bind:
        return

    def ready() -> tuple[bool, dict]:
        if not redis_ready(client):
            return False, NOT_READY
        return True, {"status": "ready"}

    try:
        start_health_server(bind, ready, metrics_token, reuse_port=True)
    except OSError as exc:
        log.error("health listener on %s not started: %s", bind, exc)
