"""One camera pulled by this instance while it holds the camera's lease: a grabber thread
(source -> JPEG at the camera's frame rate -> the outbox) and a poster thread (outbox ->
ingest, with the capture token).

Seqs start at the lease's floor and go up by one per frame, so they are never reused, and a
frame posted after the camera was taken over (seq below the new floor) is refused by ingest as
``fenced`` (409). The puller stops at once when that happens, when the lease is not renewed in
time, when ingest refuses the camera (403/404: removed), or when the service stops it; the
frames still queued then are dropped and counted. A camera that cannot be reached is reopened
with backoff; the lease is kept meanwhile, and each change of the source's state is logged
once.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from cctv.capture import metrics
from cctv.capture.lease import CameraLease
from cctv.capture.outbox import Outbox
from cctv.capture.settings import CaptureSettings
from cctv.core.registry import Camera, redact_url
from cctv_sender.backoff import Backoff
from cctv_sender.client import Outcome
from cctv_sender.failover import FailoverClient
from cctv_sender.frame import Frame, now_us
from cctv_sender.sender import RateGate
from cctv_sender.sources import Source, SourceEnded, SourceError, build_source, parse_source
from cctv_sender.tlsverify import TLSOptions

log = logging.getLogger("cctv.capture")

#: how long a camera may take to open, or to deliver the next frame, before it counts as lost
SOURCE_TIMEOUT_S = 5.0
#: the ingest reply that means "another instance holds this camera now"
FENCED_STATUS = 409
#: FFmpeg's options for RTSP cameras (through OpenCV; the variable set by hand wins): TCP, and
#: 0.3 s of stream to find the codec's parameters instead of FFmpeg's default of about a
#: second: opening the stream is most of a take-over's time (the frame rate FFmpeg would
#: measure longer is not needed, the registry's fps paces the camera)
FFMPEG_OPTIONS = "rtsp_transport;tcp|analyzeduration;300000"
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", FFMPEG_OPTIONS)


class Puller:
    """Pulls ``camera`` under ``lease`` until :meth:`stop` or a reason to stop (see module)."""

    def __init__(self, camera: Camera, lease: CameraLease, settings: CaptureSettings,
                 token: str) -> None:
        self.camera, self.lease, self.s = camera, lease, settings
        self.name = camera.name
        tls = TLSOptions(ca_file=settings.capture_ca_file)
        self.client = FailoverClient(settings.capture_ingest_urls, camera.name, token,
                                     timeout_s=2.0, tls=tls)
        self.outbox = Outbox(settings.capture_queue_frames)
        self.next_seq = lease.floor
        self.accepted = 0
        self.stop_reason = ""
        self._stop = threading.Event()
        self._source_state = ""
        self._threads = [threading.Thread(target=self._guard(self._grab_loop), daemon=True,
                                          name=f"grab-{camera.name}"),
                         threading.Thread(target=self._guard(self._post_loop), daemon=True,
                                          name=f"post-{camera.name}")]

    # ---- life cycle ---------------------------------------------------------------------
    def start(self) -> Puller:
        """Start both threads."""
        for t in self._threads:
            t.start()
        return self

    def update(self, camera: Camera) -> None:
        """The registry entry changed (source, fps): the grabber picks it up."""
        self.camera = camera

    def stop(self, reason: str) -> None:
        """Stop pulling (the first reason given is kept); frames still queued are dropped
        and counted."""
        if self._stop.is_set():
            return
        self.stop_reason = reason
        self._stop.set()
        self.outbox.close()
        dropped = self.outbox.drain()
        metrics.LOST.labels(self.name, reason).inc()
        if dropped:
            metrics.DROPPED.labels(self.name, "lease_lost").inc(len(dropped))
        log.warning("camera %s: stopped pulling (%s); seqs %d..%d posted, %d frames accepted, "
                    "%d queued frames dropped", self.name, reason, self.lease.floor,
                    self.next_seq - 1, self.accepted, len(dropped))

    @property
    def running(self) -> bool:
        """False once the puller stopped, for whatever reason."""
        return not self._stop.is_set()

    def join(self, timeout_s: float) -> None:
        """Wait for both threads to end."""
        end = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))

    def _guard(self, loop):  # noqa: ANN001, ANN202 - a thread body
        def run() -> None:
            try:
                loop()
            except Exception:  # a bug: stop this camera visibly, the service hands it over
                log.exception("camera %s: puller failed", self.name)
                self.stop("failed")
        return run

    def _held(self) -> bool:
        if self.lease.held():
            return True
        self.stop("lease_lost" if self.lease.lost_reason != "released" else "released")
        return False

    # ---- grabbing -----------------------------------------------------------------------
    def _set_state(self, state: str, error: bool = False) -> None:
        if state != self._source_state:
            self._source_state = state
            (log.warning if error else log.info)("camera %s: source %s", self.name, state)

    def _open(self, source_str: str) -> Source:
        spec = parse_source(source_str)
        fps = self.camera.fps or self.s.capture_default_fps
        source = build_source(spec, quality=self.s.capture_jpeg_quality, loop=True,
                              timeout_s=SOURCE_TIMEOUT_S, fps=fps)
        source.open()
        return source

    def _grab_loop(self) -> None:
        backoff = Backoff(0.5, 10.0)
        while self.running and self._held():
            source_str = self.camera.source or ""
            where = redact_url(source_str)
            try:
                source = self._open(source_str)
            except (SourceError, ValueError) as exc:
                metrics.SOURCE_ERRORS.labels(self.name).inc()
                self._set_state(f"{where} unavailable ({exc}); retrying with backoff", True)
                self._stop.wait(backoff.next_delay())
                continue
            try:
                self._grab_frames(source, source_str, backoff)
            except SourceEnded:
                self._set_state(f"{where} ended; reopening")
            except SourceError as exc:
                metrics.SOURCE_ERRORS.labels(self.name).inc()
                self._set_state(f"{where} lost ({exc}); reconnecting with backoff", True)
                self._stop.wait(backoff.next_delay())
            finally:
                source.close()

    def _grab_frames(self, source: Source, source_str: str, backoff: Backoff) -> None:
        fps = self.camera.fps or self.s.capture_default_fps
        gate = RateGate(fps)
        first = True
        while self.running and self._held():
            if (self.camera.source or "") != source_str:
                self._set_state("changed in the registry; reopening")
                return
            source.grab()
            if first:
                self._set_state(f"{redact_url(source_str)} streaming ({source.describe()})")
                backoff.reset()
                first = False
            wanted = self.camera.fps or self.s.capture_default_fps
            if wanted != fps:
                fps, gate = wanted, RateGate(wanted)
            if not gate.take(time.monotonic()):
                continue
            jpeg = source.retrieve()
            frame = Frame(jpeg=jpeg, ts_us=source.capture_ts_us() or now_us(),
                          seq=self.next_seq)
            self.next_seq += 1
            dropped = self.outbox.put(frame)
            if dropped is not None:
                metrics.DROPPED.labels(self.name, "queue_full").inc()
                log.warning("camera %s: resend queue full (%d frames, ingest not answering): "
                            "frame seq %d dropped", self.name, self.outbox.size, dropped.seq)

    # ---- posting ------------------------------------------------------------------------
    def _post_loop(self) -> None:
        backoff = Backoff(0.1, 2.0)
        down_logged = False
        try:
            while self.running:
                frame = self.outbox.peek(0.5)
                if frame is None or not self.running:
                    continue
                if not self._held():
                    return
                reply = self.client.post(frame)
                if reply.outcome in (Outcome.DELIVERED, Outcome.DUPLICATE):
                    self.outbox.done(frame)
                    self.accepted += 1
                    metrics.POSTED.labels(self.name, reply.outcome.value).inc()
                    if down_logged:
                        log.info("camera %s: ingest takes frames again", self.name)
                        down_logged = False
                    if self.accepted == 1:
                        log.info("camera %s: first frame accepted (seq %d, epoch %d)",
                                 self.name, frame.seq, self.lease.epoch)
                    backoff.reset()
                elif reply.status == FENCED_STATUS:
                    metrics.POSTED.labels(self.name, "fenced").inc()
                    self.lease.lose("fenced")
                    self.stop("fenced")
                    log.warning("camera %s: ingest refused seq %d as fenced: another instance "
                                "pulls the camera now", self.name, frame.seq)
                    return
                elif reply.outcome is Outcome.RETRY:
                    metrics.POSTED.labels(self.name, "retry").inc()
                    if not down_logged:
                        log.warning("camera %s: %s; frames wait (at most %d) and are resent",
                                    self.name, reply.message or reply.status, self.outbox.size)
                        down_logged = True
                    self._stop.wait(reply.retry_after or backoff.next_delay())
                elif reply.status in (401, 403, 404):
                    metrics.POSTED.labels(self.name, "rejected").inc()
                    metrics.DROPPED.labels(self.name, "rejected").inc()
                    log.error("camera %s: ingest refused the camera (%s): removed from the "
                              "registry, or ingest does not accept the capture token",
                              self.name, reply.message or reply.status)
                    self.outbox.done(frame)
                    self.stop("rejected")
                    return
                else:  # a refusal of this frame only (too large, not a JPEG)
                    metrics.POSTED.labels(self.name, "rejected").inc()
                    metrics.DROPPED.labels(self.name, "rejected").inc()
                    log.warning("camera %s: frame seq %d refused: %s", self.name, frame.seq,
                                reply.message)
                    self.outbox.done(frame)
        finally:
            self.client.close()
