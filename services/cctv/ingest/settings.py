"""The ingest service's settings section: its gunicorn, the token throttle, the health thread."""

from __future__ import annotations

from dataclasses import dataclass

from cctv.core.settings import Bad, CoreSettings, require_bind, require_positive


@dataclass(frozen=True)
class IngestSettings(CoreSettings):
    """What ``cctv ingest`` reads besides :class:`CoreSettings` (the camera registry and frame
    limits are there). Field ``x`` is read from ``CCTV_X``."""

    ingest_bind: str = "0.0.0.0:8080"
    ingest_workers: int = 2
    ingest_threads: int = 8
    # after this many failed tokens from one client address within the window, that address
    # gets 429 + Retry-After until the window has room again (per ingest process)
    ingest_auth_fail_limit: int = 20
    ingest_auth_fail_window_s: float = 60.0
    # also answer /healthz and /readyz on this address, from a thread of its own: a probe there
    # is answered while every request thread is busy (empty = off; the stack's health checks
    # use it)
    ingest_health_bind: str = ""

    def _validate_section(self, bad: Bad) -> None:
        """Check the fields of this section."""
        require_positive(self, bad, "ingest_workers", "ingest_threads", "ingest_auth_fail_limit",
                         "ingest_auth_fail_window_s")
        require_bind(self, bad, "ingest_bind")
        require_bind(self, bad, "ingest_health_bind", optional=True)
