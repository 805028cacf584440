"""``cctv inference``: one replica process: signals, the health endpoint, the warm model and
tracker, then the replica's role loop (:mod:`cctv.inference.replica`) until SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import time
from http.server import ThreadingHTTPServer

from cctv.core.health_server import start_health_server
from cctv.core.signals import stop_on_signals
from cctv.inference.capacity import measure_ms_per_frame
from cctv.inference.classes import ClassesError, class_filter
from cctv.inference.detector import ModelLoadError, load_detector
from cctv.inference.replica import Replica
from cctv.inference.settings import InferenceSettings
from cctv.inference.tracking import TrackingUnavailable, warm_tracker

log = logging.getLogger("cctv.inference")


def _health_server(replica: Replica) -> ThreadingHTTPServer:
    def ready() -> tuple[bool, dict]:
        redis_ok = time.monotonic() - replica.redis_ok_at < 5
        ok = replica.ready and redis_ok
        return ok, {"ready": ok, "model_loaded": replica.ready, "redis": redis_ok,
                    "role": replica.role}

    return start_health_server(replica.s.inference_http_bind, ready, replica.s.metrics_token)


def run_inference(settings: InferenceSettings) -> int:
    """Run one replica until SIGTERM/SIGINT; returns the process exit code."""
    replica = Replica(settings)

    stop_on_signals(replica.stop, log, "finishing the current frame, then releasing the lease")
    try:
        server = _health_server(replica)
    except OSError as exc:
        log.error("cannot listen on CCTV_INFERENCE_HTTP_BIND=%s: %s",
                  settings.inference_http_bind, exc)
        return 2
    replica.heartbeat.start()
    try:
        replica.detector = load_detector(settings.model, device=settings.device,
                                         imgsz=settings.imgsz, conf=settings.conf,
                                         iou=settings.iou,
                                         backend=settings.inference_backend,
                                         batch=settings.inference_batch)
        kept = class_filter(settings.classes, getattr(replica.detector, "names", None))
        log.info("classes kept: %s", kept.why)
        warm_tracker(settings)  # load the tracker now, not at the first take-over
        if not replica.ms_per_frame:
            replica.ms_per_frame = measure_ms_per_frame(replica.detector.detect)
        log.info("model time per frame here: %.1f ms (%s)", replica.ms_per_frame,
                 "CCTV_INFERENCE_MS_PER_FRAME" if settings.inference_ms_per_frame else "measured")
    except (ModelLoadError, TrackingUnavailable, ClassesError) as exc:
        log.error("%s%s", f"CCTV_CLASSES={settings.classes}: " if isinstance(
            exc, ClassesError) else "", exc)
        replica.stop.set()
        replica.heartbeat.stop()
        server.shutdown()
        return 2
    replica.ready = True
    log.info("replica %s ready (warm) on node %s", replica.replica_id, settings.node,
             extra={"worker": replica.replica_id})
    replica.run()
    replica.heartbeat.stop()
    server.shutdown()
    if replica.failure is not None:
        return 1
    log.info("replica %s stopped", replica.replica_id)
    return 0
