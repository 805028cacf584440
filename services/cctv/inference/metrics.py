"""What a replica reports: its Prometheus metrics, and the recent throughput and lag its
heartbeat carries."""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import Counter, Gauge, Histogram

PROCESSED = Counter("cctv_inference_frames_processed_total", "Frames detected", ["camera"])
DROPPED = Counter("cctv_inference_frames_dropped_total", "Frames dropped by the live policy",
                  ["camera", "reason"])
INFER_SECONDS = Histogram("cctv_inference_seconds", "Model time per frame",
                          buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0))
DETECTIONS_FILTERED = Counter(
    "cctv_inference_detections_filtered_total",
    "Detections left out after the model, by the first rule that left them out: class "
    "(CCTV_CLASSES or the camera's classes), confidence, area, mask (a camera's detection "
    "settings)", ["reason"])
#: its series by reason, looked up once (inference/camera_filter.py counts per frame)
FILTERED = {_r: DETECTIONS_FILTERED.labels(_r) for _r in ("class", "confidence", "area", "mask")}
SETTINGS_REJECTED = Counter(
    "cctv_inference_camera_settings_rejected_total",
    "Camera detection settings the model cannot apply (a class it does not have), once per "
    "camera and registry version; the camera keeps CCTV_CLASSES meanwhile", ["camera"])
LAG_SECONDS = Gauge("cctv_inference_stream_lag_seconds", "Age of the last processed frame",
                    ["camera"])

IS_LEADER = Gauge("cctv_inference_is_leader", "1 while this replica leads a shard (holds a "
                  "lease)")
SHARDS_LED = Gauge("cctv_inference_shards_led", "Shards this replica leads now")
EPOCH = Gauge("cctv_inference_leader_epoch",
              "Epoch of this replica's current/last leadership (of its lowest shard)")
ACQUISITIONS = Counter("cctv_inference_failovers_total",
                       "Lease acquisitions by this replica, by reason: initial (first leader), "
                       "expired (took over from a dead leader), released (planned hand-over)",
                       ["reason"])
for _reason in ("initial", "expired", "released"):
    ACQUISITIONS.labels(_reason)  # export zeros, so rate() sees the first failover


class ReplicaStats:
    """Recent throughput and lag, for heartbeats and logs."""

    def __init__(self) -> None:
        self._done: deque[float] = deque(maxlen=512)
        self.lag_ms = 0.0
        self.lock = threading.Lock()

    def processed(self, n: int, lag_ms: float) -> None:
        """Count ``n`` frames processed now, the oldest ``lag_ms`` old."""
        now = time.monotonic()
        with self.lock:
            self._done.extend([now] * n)
            self.lag_ms = lag_ms

    def fps(self) -> float:
        """Frames processed per second over the last 5 s."""
        now = time.monotonic()
        with self.lock:
            recent = [t for t in self._done if now - t < 5.0]
        return len(recent) / 5.0
