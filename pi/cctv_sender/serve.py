"""``cctv-sender --serve-rtsp``: serve the Pi camera as H.264 over RTSP for a puller in the
cluster, instead of pushing JPEG frames to ingest (for links too thin for JPEG)."""

from __future__ import annotations

import logging
import signal
import threading
import time

from cctv_sender.config import Config
from cctv_sender.rtsp_server import RtspServer
from cctv_sender.sdnotify import Notifier
from cctv_sender.sources import SourceConfigError, SourceError, build_source
from cctv_sender.sources.picam import PicameraSource

log = logging.getLogger("cctv_sender")


def default_bitrate(size: tuple[int, int], fps: float) -> int:
    """3 Mbit/s for 1280x720 at 30 fps, scaled by pixels per second (at least 300 kbit/s)."""
    w, h = size
    return max(300_000, int(3_000_000 * (w * h * (fps or 30)) / (1280 * 720 * 30)))


def serve(cfg: Config, notifier: Notifier | None = None) -> int:
    """Serve until SIGTERM/SIGINT; exit 1 after ``camera_gone_max_s`` without a frame."""
    if cfg.source.kind != "picamera2":
        raise SourceConfigError("--serve-rtsp needs the Pi camera (source picamera2:)")
    source = build_source(cfg.source, quality=cfg.quality, size=cfg.size,
                          timeout_s=cfg.timeout_s, fps=cfg.fps)
    assert isinstance(source, PicameraSource)
    fps = source.fps or 30.0
    if not source.fps:
        source.fps = fps
    bitrate = cfg.source.opt_int("bitrate") or default_bitrate(source.size, fps)
    host, _, port = cfg.serve_rtsp.rpartition(":")
    try:
        server = RtspServer(host or "0.0.0.0", int(port), cfg.camera or "camera").start()
    except OSError as exc:
        raise SourceConfigError(f"cannot listen on {cfg.serve_rtsp}: "
                                f"{exc.strerror or exc}") from None
    notifier = notifier or Notifier()
    stop = threading.Event()
    last = {"t": time.monotonic()}

    def push(au: bytes, keyframe: bool, sensor_us: int | None) -> None:
        last["t"] = time.monotonic()
        server.push(au, keyframe, sensor_us)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("got %s, stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    stall = min(x for x in (max(25.0, 2 * cfg.timeout_s + 5), cfg.camera_gone_max_s) if x)
    code = 0
    opened = False
    notifier.ready(f"serving rtsp on port {server.port}")
    try:
        while not stop.is_set():
            if not opened:
                try:
                    what = source.open_h264(push, bitrate, keyframe_every=int(fps))
                    opened = True
                    last["t"] = time.monotonic()
                    log.info("%s at %s, %.1f Mbit/s, keyframe every %d frames: rtsp://<host>:"
                             "%d/%s", what, source.describe(), bitrate / 1e6, int(fps),
                             server.port, server.path)
                except SourceError as exc:
                    log.warning("%s", exc)
            gone = time.monotonic() - last["t"]
            if opened and gone > cfg.timeout_s:
                log.warning("no frame from %s for %.0fs; reopening", source.name, gone)
                source.close()
                opened = False
            if cfg.camera_gone_max_s and gone >= cfg.camera_gone_max_s:
                log.error("no frame from %s for %.0fs; exiting so that the service restarts",
                          source.name, gone)
                code = 1
                break
            if notifier.watchdog_s and gone < stall:
                notifier.watchdog()
            notifier.status(f"{'streaming' if opened else 'camera unavailable'}; "
                            f"{server.clients} client(s); {server.access_units} frames; "
                            f"{server.sent_bytes / 1e6:.1f} MB sent")
            stop.wait(min(1.0, (notifier.watchdog_s or 3) / 3))
    finally:
        notifier.stopping()
        source.close()
        server.stop()
        log.info("stopped: %d frames encoded, %d sent, %d bytes sent in %d session(s), %d "
                 "slow client(s) dropped", server.access_units, server.frames_sent,
                 server.sent_bytes, server.sessions, server.slow_clients)
    return code
