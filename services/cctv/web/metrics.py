"""Cluster-wide Prometheus gauges exported by web: per-camera rates, latency and stream state
(from the camera sampler), and the inference leadership as Redis has it.

Computed when /metrics is scraped from the shared snapshot (no stale label sets are left
behind when a camera disappears). The replicas export their own ``cctv_inference_*`` series.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client.core import REGISTRY, GaugeMetricFamily

from cctv.core import keys
from cctv.core.redisconn import REDIS_DOWN_ERRORS
from cctv.web.camera_stats import CameraStats

log = logging.getLogger("cctv.web.metrics")

_CAMERA_GAUGES = (
    ("cctv_camera_frames_in_per_second", "Frames accepted by ingest per second", "fps_in"),
    ("cctv_camera_frames_processed_per_second", "Frames with a result per second",
     "fps_processed"),
    ("cctv_camera_frames_skipped_per_second",
     "Frames dropped by the live policy per second (behind, stale, corrupt, evicted)",
     "fps_skipped"),
    ("cctv_camera_frames_rejected_per_second", "Frames refused by the rate limit per second",
     "fps_rejected"),
    ("cctv_camera_stream_length", "Frames kept in the camera's stream", "stream_length"),
    ("cctv_camera_consumer_lag", "Frames in the stream not yet read by inference",
     "consumer_lag"),
    ("cctv_camera_pending", "Frames read by inference and not yet acknowledged", "pending"),
    ("cctv_camera_last_frame_age_seconds", "Seconds since the camera's last frame",
     "last_frame_age_s"),
)


class WebCollector:
    """Reads the camera sampler and the lease; set ``sources`` once the app exists."""

    def __init__(self) -> None:
        self.sources: tuple[redis.Redis, CameraStats] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.sources is None:
            return
        client, stats = self.sources
        cams = stats.snapshot()
        for name, doc, field in _CAMERA_GAUGES:
            g = GaugeMetricFamily(name, doc, labels=["camera"])
            for cam, fig in sorted(cams.items()):
                if fig.get(field) is not None:
                    g.add_metric([cam], float(fig[field]))
            yield g
        lat = GaugeMetricFamily("cctv_camera_latency_seconds",
                                "Mean latency over the last 5 s (capture_to_result compares the "
                                "camera's clock with the inference node's)",
                                labels=["camera", "span"])
        for cam, fig in sorted(cams.items()):
            for span, ms in fig.get("latency_ms", {}).items():
                if ms is not None:
                    lat.add_metric([cam, span], ms / 1000)
        yield lat
        silent = GaugeMetricFamily("cctv_camera_silent", "1 while the camera sends no frames",
                                   labels=["camera"])
        for cam, fig in sorted(cams.items()):
            silent.add_metric([cam], 1.0 if fig.get("silent") else 0.0)
        yield silent
        try:
            pipe = client.pipeline(transaction=False)
            pipe.get(keys.LEASE_INFERENCE)
            pipe.get(keys.EPOCH_INFERENCE)
            leader, epoch = pipe.execute()
        except (*REDIS_DOWN_ERRORS, redis.RedisError) as exc:
            log.debug("metrics: redis unavailable: %s", exc)
            return
        yield GaugeMetricFamily("cctv_cluster_leader_present",
                                "1 while an inference replica holds the lease",
                                value=1.0 if leader else 0.0)
        yield GaugeMetricFamily("cctv_cluster_leader_epoch",
                                "Current inference leadership epoch (increments on every "
                                "acquisition, so its increase counts failovers)",
                                value=float(int(epoch or 0)))


COLLECTOR = WebCollector()
REGISTRY.register(COLLECTOR)
