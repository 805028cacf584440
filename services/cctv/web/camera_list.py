"""The cameras the viewer shows: those that have sent a frame (``cctv:cameras:active``) and,
with a strict registry (``CCTV_CAMERAS_STRICT``, the default), are still in it, so a camera
removed from ``CCTV_CAMERAS`` leaves the dashboard, the grid, the API and its video URL
instead of staying there, silent, for good."""

from __future__ import annotations

import redis

from cctv.core import keys
from cctv.web.settings import WebSettings


class CameraList:
    """Which cameras exist for the viewer."""

    def __init__(self, client: redis.Redis, settings: WebSettings) -> None:
        self.redis = client
        self.registry = frozenset(settings.camera_tokens) if settings.cameras_strict else None

    def names(self) -> list[str]:
        """The cameras to show, sorted."""
        active = (c.decode() for c in self.redis.smembers(keys.CAMERAS_ACTIVE))
        return sorted(c for c in active if self.registry is None or c in self.registry)

    def known(self, camera: str) -> bool:
        """Whether ``camera`` is shown."""
        if self.registry is not None and camera not in self.registry:
            return False
        return bool(self.redis.sismember(keys.CAMERAS_ACTIVE, camera))
