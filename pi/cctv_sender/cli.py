"""The ``cctv-sender`` command."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence

from cctv_sender import __version__
from cctv_sender.client import IngestClient, IngestURLError
from cctv_sender.config import Config, ConfigError, load_config
from cctv_sender.failover import FailoverClient
from cctv_sender.sdnotify import Notifier
from cctv_sender.sender import Sender
from cctv_sender.sources import SourceConfigError, build_source
from cctv_sender.spool import Spool
from cctv_sender.state import SequenceCounter, StateDir, StateError
from cctv_sender.tokenwatch import TokenWatcher

log = logging.getLogger("cctv_sender")


def setup_logging(level: str) -> None:
    """Log to stderr; without timestamps under systemd (the journal adds its own)."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, level), format=fmt, stream=sys.stderr)


def stall_s(cfg: Config) -> float:
    """Seconds without a frame (or with a thread silent) after which the watchdog pings
    stop: longer than a camera timeout and a reopen, never longer than the camera may be
    gone before the sender exits."""
    stall = max(25.0, 2 * cfg.timeout_s + 5)
    if cfg.camera_gone_max_s:
        stall = min(stall, cfg.camera_gone_max_s)
    return stall


def run(cfg: Config) -> int:
    """Run the sender until SIGTERM/SIGINT (or ``--max-frames``/end of a file)."""
    if cfg.source.kind == "file" and not os.path.isfile(str(cfg.source.target)):
        raise SourceConfigError(f"source file {cfg.source.target} does not exist")
    source = build_source(cfg.source, quality=cfg.quality, loop=cfg.loop, size=cfg.size,
                          timeout_s=cfg.timeout_s, fps=cfg.fps)
    client: IngestClient | FailoverClient
    if len(cfg.ingest_urls) > 1:
        client = FailoverClient(cfg.ingest_urls, cfg.camera, cfg.token, timeout_s=cfg.timeout_s,
                                tls=cfg.tls)
        log.info("%d ingest URLs: when one is down, frames go to the next", len(client.clients))
    else:
        client = IngestClient(cfg.ingest, cfg.camera, cfg.token, timeout_s=cfg.timeout_s,
                              tls=cfg.tls)
    if client.scheme == "http":
        log.warning("--insecure: ingest %s is plain HTTP; the camera token and every frame "
                    "cross the network unencrypted. Use https:// where the network is not "
                    "yours alone", cfg.ingest)
    else:
        log.info("ingest certificate checked against %s", cfg.tls.describe())
    if cfg.token_file is not None:
        TokenWatcher(cfg.token_file, cfg.token, client.set_token).start()
    state = StateDir(cfg.state_dir, cfg.camera).open()
    try:
        spool = Spool(state.path / "spool", cfg.spool_bytes).open()
        seq = SequenceCounter(state.path / "seq").load()
        sender = Sender(source=source, client=client, spool=spool, seq=seq, fps=cfg.fps,
                        queue_size=cfg.queue_size, spool_rate=cfg.spool_rate,
                        max_frames=cfg.max_frames, flush_timeout_s=cfg.flush_timeout_s,
                        reconnect_max_s=cfg.reconnect_max_s, notifier=Notifier(),
                        stats_path=state.path / "stats.json",
                        stall_s=stall_s(cfg), camera_gone_max_s=cfg.camera_gone_max_s)

        def on_signal(signum: int, _frame: object) -> None:
            log.info("got %s, stopping", signal.Signals(signum).name)
            sender.stop_event.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        log.info("cctv-sender %s: camera %s from %s to %s (fps limit %s, spool %s MB in %s, "
                 "next seq %d)", __version__, cfg.camera, cfg.source.display, cfg.ingest,
                 cfg.fps or "none", cfg.spool_bytes // 1_000_000, state.path, seq.peek)
        return sender.run()
    finally:
        state.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse the configuration, then run (or ``--check``)."""
    try:
        cfg = load_config(argv)
    except ConfigError as exc:
        print(f"cctv-sender: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_level)
    try:
        if cfg.check:
            from cctv_sender.check import run_check
            return run_check(cfg)
        if cfg.serve_rtsp:
            from cctv_sender.serve import serve
            return serve(cfg)
        return run(cfg)
    except (SourceConfigError, IngestURLError, StateError) as exc:
        print(f"cctv-sender: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
