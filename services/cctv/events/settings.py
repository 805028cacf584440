"""The events service's settings section: the rules file, the media folder and its retention."""

from __future__ import annotations

from dataclasses import dataclass

from cctv.core.settings import Bad, CoreSettings, require_bind, require_positive


@dataclass(frozen=True)
class EventsSettings(CoreSettings):
    """What ``cctv events`` reads besides :class:`CoreSettings` (the event stream's lengths are
    there, for the memory bound). Field ``x`` is read from ``CCTV_X``."""

    # zones, rules, webhooks: a YAML or JSON file read by `cctv events` (docs/events.md)
    events_config: str = ""
    # snapshots and crops (a volume in production)
    events_dir: str = "/var/lib/cctv/events"
    events_retention_days: float = 7.0
    events_max_bytes: int = 2 * 1024**3
    events_retention_interval_s: float = 60.0
    # /healthz, /readyz and /metrics of the events service
    events_http_bind: str = "0.0.0.0:9200"
    # HMAC key that signs webhook payloads (CCTV_WEBHOOK_SECRET_FILE for a Docker secret)
    webhook_secret: str = ""

    def _validate_section(self, bad: Bad) -> None:
        """Check the fields of this section; the rules file itself is checked by
        ``cctv events``."""
        require_positive(self, bad, "events_max_bytes", "events_retention_days",
                         "events_retention_interval_s")
        require_bind(self, bad, "events_http_bind")
