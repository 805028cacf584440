"""Prometheus metrics shared helpers.

Gunicorn services with several worker processes set ``PROMETHEUS_MULTIPROC_DIR`` (the
service's gunicorn config does this) and are aggregated with the multiprocess collector.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY


def render_metrics() -> tuple[bytes, str]:
    """The exposition text of this process (or of all gunicorn workers) and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(DEFAULT_REGISTRY), CONTENT_TYPE_LATEST


def metrics_authorized(token: str, authorization: str) -> bool:
    """True when /metrics is open (no token set) or ``authorization`` is ``Bearer <token>``."""
    if not token:
        return True
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    digest = hashlib.sha256
    return hmac.compare_digest(digest(given.strip().encode()).digest(),
                               digest(token.encode()).digest())
