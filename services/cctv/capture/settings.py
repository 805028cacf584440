"""The capture service's settings section: where it posts, its per-camera lease, how often it
looks for cameras to pull."""

from __future__ import annotations

from dataclasses import dataclass

from cctv.core.settings import Bad, CoreSettings, require_bind, require_positive


@dataclass(frozen=True)
class CaptureSettings(CoreSettings):
    """What ``cctv capture`` reads besides :class:`CoreSettings` (the capture token and the
    node name are there). Field ``x`` is read from ``CCTV_X``."""

    # ingest URLs frames are posted to, comma-separated: the next one is tried when one is down
    capture_ingest: str = "http://127.0.0.1:8080"
    # CA file that signs ingest's certificate (https:// ingest URLs; empty = system CAs)
    capture_ca_file: str = ""
    # the per-camera lease: a dead instance's cameras are taken over after this (renewed every
    # third of it)
    capture_lease_ttl_ms: int = 1500
    # how often the registry and the other instances are looked at (claims, releases)
    capture_scan_s: float = 0.25
    # at most this many cameras pulled by one instance (0 = no limit beyond the fair share)
    capture_max_cameras: int = 0
    # frame rate of a camera whose registry entry sets none
    capture_default_fps: float = 5.0
    # frames kept for a resend while ingest cannot be reached, per camera (oldest dropped,
    # counted, beyond it)
    capture_queue_frames: int = 50
    # JPEG quality of frames encoded from decoded video (RTSP, files)
    capture_jpeg_quality: int = 80
    # /healthz, /readyz and /metrics of a capture instance
    capture_http_bind: str = "0.0.0.0:9300"

    @property
    def capture_ingest_urls(self) -> list[str]:
        """The ingest URLs of :attr:`capture_ingest`."""
        return [u.strip() for u in self.capture_ingest.split(",") if u.strip()]

    def _validate_section(self, bad: Bad) -> None:
        """Check the fields of this section."""
        require_positive(self, bad, "capture_lease_ttl_ms", "capture_scan_s",
                         "capture_default_fps", "capture_queue_frames")
        if not self.capture_ingest_urls or not all(
                u.startswith(("http://", "https://")) for u in self.capture_ingest_urls):
            raise bad("capture_ingest", "use http(s)://host:port, comma-separated")
        if self.capture_lease_ttl_ms < 300:
            raise bad("capture_lease_ttl_ms", "must be >= 300")
        if self.capture_max_cameras < 0:
            raise bad("capture_max_cameras", "must be >= 0 (0 = no limit)")
        if not 1 <= self.capture_jpeg_quality <= 100:
            raise bad("capture_jpeg_quality", "must be 1..100")
        require_bind(self, bad, "capture_http_bind")
