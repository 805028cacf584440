"""The capture service's Prometheus metrics (one place, so every module counts the same way)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

POSTED = Counter("cctv_capture_frames_total", "Frames posted to ingest, by reply",
                 ["camera", "outcome"])
DROPPED = Counter("cctv_capture_dropped_total",
                  "Frames captured but never accepted by ingest, by reason (queue_full: the "
                  "resend queue overflowed while ingest was down; rejected: a 4xx reply; "
                  "lease_lost: still queued when the camera was handed over)",
                  ["camera", "reason"])
LEASES = Counter("cctv_capture_leases_total", "Camera leases taken by this instance",
                 ["camera"])
LOST = Counter("cctv_capture_stops_total",
               "Pullers stopped, by reason (fenced, lease_lost, released, removed, reassigned, "
               "rejected, failed)",
               ["camera", "reason"])
SOURCE_ERRORS = Counter("cctv_capture_source_errors_total",
                        "Camera sources that failed to open or stopped delivering", ["camera"])
HELD = Gauge("cctv_capture_cameras", "Cameras this instance pulls now")
