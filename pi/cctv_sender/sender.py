"""The sender: a capture thread and an upload thread joined by a small live queue, with a
disk spool for outages, watched by the main thread (signals, sd_notify, status)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from cctv_sender.backoff import Backoff
from cctv_sender.client import IngestClient, Outcome, Reply
from cctv_sender.clock import ClockSync
from cctv_sender.failover import FailoverClient
from cctv_sender.frame import Frame, now_us
from cctv_sender.livequeue import LiveQueue
from cctv_sender.sdnotify import Notifier
from cctv_sender.sources import Source, SourceEnded, SourceError
from cctv_sender.spool import Spool, SpoolWriteError
from cctv_sender.state import SequenceCounter, write_atomic
from cctv_sender.stats import Stats

log = logging.getLogger("cctv_sender")


class RateGate:
    """Lets events through at most ``rate`` per second on average (0: always).

    The schedule advances by one interval per accepted event rather than restarting at the
    accepted time, so a 30 fps camera limited to 10 fps really gives 10 fps despite jitter.
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._due = 0.0

    def wait_s(self, now: float) -> float:
        """Seconds until the next event may pass (0 when it may pass now)."""
        return max(0.0, self._due - now - min(0.02, self.interval / 4))

    def take(self, now: float) -> bool:
        """Let one event through if it is due; returns whether it passed."""
        if not self.interval:
            return True
        if self.wait_s(now) > 0:
            return False
        nxt = self._due + self.interval
        # after a pause (or at the start) restart the schedule instead of letting a burst by
        self._due = nxt if nxt > now else now + self.interval
        return True


class Sender:
    """Runs one camera until stopped, or until ``max_frames`` were captured and sent."""

    def __init__(self, *, source: Source, client: IngestClient | FailoverClient, spool: Spool,
                 seq: SequenceCounter, fps: float = 10.0, queue_size: int = 4,
                 spool_rate: float = 15.0, max_frames: int = 0, flush_timeout_s: float = 30.0,
                 reconnect_max_s: float = 30.0, notifier: Notifier | None = None,
                 stats_path: object = None, status_interval_s: float = 5.0,
                 log_interval_s: float = 60.0, stall_s: float = 25.0,
                 camera_gone_max_s: float = 0.0,
                 clock_synced: Callable[[], bool] | None = None) -> None:
        self.source, self.client, self.spool, self.seq = source, client, spool, seq
        self.live = LiveQueue(queue_size)
        self.fps_gate = RateGate(fps)
        self.spool_rate = spool_rate
        self.max_frames = max_frames
        self.flush_timeout_s = flush_timeout_s
        self.reconnect_max_s = reconnect_max_s
        self.notifier = notifier or Notifier({})
        self.stats_path = stats_path
        self.status_interval_s = status_interval_s
        self.log_interval_s = log_interval_s
        # no frame (or a thread silent) this long: stop the watchdog pings
        self.stall_s = stall_s
        # no frame this long: give up and exit non-zero, so systemd restarts a clean process
        self.camera_gone_max_s = camera_gone_max_s
        self.clock_synced = clock_synced or ClockSync().synced
        self.stats = Stats()
        self.stop_event = threading.Event()      # SIGTERM/SIGINT: stop capturing, wrap up
        self.capture_done = threading.Event()    # no more frames will come
        self.upload_done = threading.Event()
        self.ingest_down = False
        self.heartbeat: dict[str, float] = {}
        self._rate_fps = 0.0
        self._stall_logged = False
        self._spool_error_logged = 0.0
        self._seq_error_logged = 0.0
        self._last_frame = time.monotonic()
        self._threads: list[threading.Thread] = []

    # -- capture ------------------------------------------------------------------------------
    def _beat(self, name: str) -> None:
        self.heartbeat[name] = time.monotonic()

    def _sleep(self, seconds: float) -> None:
        """Sleep unless stopped."""
        self.stop_event.wait(seconds)

    def _set_source_state(self, state: str) -> None:
        if state != self.stats.source_state:
            self.stats.source_state = state
            log.info("camera %s: %s", self.source.name, state)

    def _camera_gone(self, exc: SourceError) -> bool:
        """After a camera failure: True (and the sender stops, exit code 1) when no frame
        came for ``camera_gone_max_s``."""
        gone = time.monotonic() - self._last_frame
        if not self.camera_gone_max_s or gone < self.camera_gone_max_s:
            return False
        log.error("no frame from %s for %.0fs (%s); exiting so that the service restarts",
                  self.source.name, gone, exc)
        self._set_source_state(f"failed (no camera for {gone:.0f}s: {exc})")
        self.stop_event.set()
        return True

    def _sync_source_counts(self) -> None:
        self.stats.superseded = self.source.superseded

    def capture_loop(self) -> None:
        """Open the camera, grab frames under the fps limit, number them, queue them;
        reopen with backoff when the camera is lost, give up after ``camera_gone_max_s``.

        The capture heartbeat beats only when a frame arrives, so the watchdog pings stop
        while the camera is gone as well as when the thread hangs."""
        backoff = Backoff(0.5, self.reconnect_max_s)
        self._last_frame = time.monotonic()
        self._beat("capture")
        try:
            while not self.stop_event.is_set():
                self._set_source_state("connecting")
                try:
                    self.source.open()
                except SourceError as exc:
                    self.stats.error(str(exc))
                    self.stats.add(reconnects=1)
                    if self._camera_gone(exc):
                        return
                    delay = backoff.next_delay()
                    self._set_source_state(f"unavailable ({exc}); retry in {delay:.1f}s")
                    self._sleep(delay)
                    continue
                log.info("opened %s", self.source.describe())
                try:
                    if self._grab_frames(backoff):
                        return
                except SourceEnded:
                    self._set_source_state("ended")
                    return
                except SourceError as exc:
                    self.stats.error(str(exc))
                    self.stats.add(reconnects=1)
                    self.source.close()
                    self._sync_source_counts()
                    if self._camera_gone(exc):
                        return
                    delay = backoff.next_delay()
                    self._set_source_state(f"lost ({exc}); reconnect in {delay:.1f}s")
                    self._sleep(delay)
                finally:
                    self.source.close()
                    self._sync_source_counts()
            self._set_source_state("stopped")
        except Exception as exc:  # a bug: make it visible, stop cleanly (systemd restarts)
            log.exception("capture thread failed")
            self.stats.error(f"capture failed: {exc}")
            self._set_source_state("failed")
            self.stop_event.set()
        finally:
            self.capture_done.set()
            self.live.wake()

    def _grab_frames(self, backoff: Backoff) -> bool:
        """Capture until stopped (True: finished for good) or the source fails (raises)."""
        first = True
        while not self.stop_event.is_set():
            self.source.grab()
            now = time.monotonic()
            self._last_frame = now
            self._beat("capture")
            self.stats.add(source_frames=1)
            self._sync_source_counts()
            if first:
                self._set_source_state("streaming")
                backoff.reset()
                first = False
            if not self.fps_gate.take(now):
                self.stats.add(skipped=1)
                continue
            try:
                seq = self.seq.next()
            except OSError as exc:  # the block reservation could not be made durable
                self.stats.add(seq_failed=1)
                self.stats.error(f"sequence file: {exc}")
                if now - self._seq_error_logged >= 60:
                    self._seq_error_logged = now
                    log.error("cannot reserve sequence numbers in %s (%s); dropping frames "
                              "until it works (counted as seq_failed)", self.seq.path, exc)
                continue
            jpeg = self.source.retrieve()
            synced = self.clock_synced()
            frame = Frame(jpeg=jpeg, ts_us=self.source.capture_ts_us() or now_us(),
                          seq=seq, clock_synced=synced)
            with self.stats._lock:
                if self.stats.first_seq < 0:
                    self.stats.first_seq = frame.seq
                self.stats.last_seq = frame.seq
                self.stats.captured += 1
                self.stats.unsynced += int(not synced)
            dropped = self.live.put(frame)
            if dropped is not None:
                if self.ingest_down and self.spool.enabled:
                    self._to_spool(dropped)   # outage: keep everything the spool can hold
                else:
                    self.stats.add(dropped=1)
            if self.max_frames and self.stats.captured >= self.max_frames:
                self._set_source_state(f"done ({self.max_frames} frames)")
                return True
        return False

    # -- upload -------------------------------------------------------------------------------
    def _to_spool(self, frame: Frame) -> None:
        try:
            evicted = self.spool.add(frame)
        except SpoolWriteError as exc:  # disk full, read-only after an SD card error, ...
            self.stats.add(spool_failed=1, evicted=exc.evicted)
            self.stats.error(f"spool: {exc}")
            now = time.monotonic()
            if now - self._spool_error_logged >= 60:
                self._spool_error_logged = now
                log.error("cannot write frame %d to the spool (%s); dropping it (counted as "
                          "spool_failed)", frame.seq, exc)
            return
        self.stats.add(spooled=1, evicted=evicted)
        if evicted:
            log.debug("spool full: evicted %d frame(s)", evicted)

    def _handle(self, frame: Frame, reply: Reply, from_spool: bool) -> None:
        if reply.outcome in (Outcome.DELIVERED, Outcome.DUPLICATE):
            self.stats.add(delivered=1, duplicates=int(reply.outcome is Outcome.DUPLICATE),
                           late=int(from_spool))
            if from_spool:
                self.spool.remove(frame.seq)
            else:
                self._auth_blocked_until = 0.0
            if self.ingest_down or self.stats.ingest_state != "ok":
                if self.ingest_down:
                    log.info("ingest accepts frames again; %d frame(s) spooled to send late",
                             len(self.spool))
                self.ingest_down = False
                self._backoff.reset()
                self.stats.ingest_state = "ok"
            return
        if reply.outcome is Outcome.RETRY:
            self.stats.add(retries=1, tls_refused=int(reply.tls_refused))
            self.stats.error(reply.message)
            if not from_spool:
                self._to_spool(frame)
            delay = reply.retry_after if reply.retry_after is not None \
                else self._backoff.next_delay()
            self._next_probe = time.monotonic() + delay
            if reply.tls_refused:
                # not a network problem: someone else's server, or a certificate that changed;
                # said at every attempt the backoff allows, the frames wait in the spool
                log.error("%s; nothing sent, frames kept in the spool, retry in %.1fs",
                          reply.message, delay)
            elif not self.ingest_down:
                log.warning("%s; spooling frames, retry in %.1fs", reply.message, delay)
            self.ingest_down = True
            self.stats.ingest_state = "tls refused" if reply.tls_refused else \
                "unreachable" if reply.status == 0 else f"http {reply.status}"
            return
        # rejected: never retried
        self.stats.error(reply.message)
        if reply.auth_problem:
            # the token or camera name is wrong, not the frame: leave the spool alone until a
            # live frame gets through again (or a minute passed, in case the camera is down)
            self._auth_blocked_until = time.monotonic() + 60.0
        if from_spool and reply.auth_problem:
            pass  # stays spooled: it will be accepted once the configuration is fixed
        else:
            self.stats.add(rejected=1)
            if from_spool:
                self.spool.remove(frame.seq)
        if self._reject_logged < 5 or self._reject_logged % 100 == 0:
            log.error("frame %d rejected: %s", frame.seq, reply.message)
        self._reject_logged += 1
        self.stats.ingest_state = f"rejecting ({reply.status})"

    def upload_loop(self) -> None:
        """Send live frames first; between them drain the spool at ``spool_rate``; while
        ingest is down move live frames to the spool and probe after each backoff delay."""
        self._backoff = Backoff(0.5, self.reconnect_max_s)
        self._next_probe = 0.0
        self._auth_blocked_until = 0.0
        self._reject_logged = 0
        drain = RateGate(self.spool_rate)
        flush_deadline: float | None = None
        try:
            while True:
                self._beat("upload")
                now = time.monotonic()
                if self.stop_event.is_set():
                    self.capture_done.wait(3.0)
                    self._wrap_up()
                    return
                if self.capture_done.is_set():
                    if flush_deadline is None:
                        flush_deadline = now + self.flush_timeout_s
                    if not len(self.live) and not len(self.spool):
                        return
                    if now > flush_deadline:
                        log.warning("gave up flushing after %.0fs: %d frame(s) stay in the "
                                    "spool for next time", self.flush_timeout_s,
                                    len(self.spool))
                        self._wrap_up()
                        return
                wait = 0.5
                blocked = now < self._auth_blocked_until
                if len(self.spool) and not blocked:
                    wait = (self._next_probe - now) if self.ingest_down else drain.wait_s(now)
                    wait = min(0.5, max(0.0, wait))
                frame = self.live.get(wait) if wait > 0 or len(self.live) else None
                now = time.monotonic()
                if frame is not None:
                    if self.ingest_down and now < self._next_probe:
                        self._to_spool(frame)
                    else:
                        self._handle(frame, self.client.post(frame), from_spool=False)
                    continue
                if not len(self.spool) or now < self._auth_blocked_until:
                    continue
                if self.ingest_down:
                    if now < self._next_probe:
                        continue
                elif not drain.take(now):
                    continue
                old = self.spool.peek()
                if old is not None:
                    self._handle(old, self.client.post(old), from_spool=True)
        except Exception as exc:
            log.exception("upload thread failed")
            self.stats.error(f"upload failed: {exc}")
            self.stop_event.set()
            self._wrap_up()
        finally:
            self.client.close()
            self.upload_done.set()

    def _wrap_up(self) -> None:
        """On stop: try the queued live frames for a moment, spool whatever is left."""
        end = time.monotonic() + 2.0
        for frame in self.live.drain():
            if not self.ingest_down and time.monotonic() < end:
                self._handle(frame, self.client.post(frame), from_spool=False)
            elif self.spool.enabled:
                self._to_spool(frame)
            else:
                self.stats.add(dropped=1)

    # -- supervision --------------------------------------------------------------------------
    def status_line(self) -> str:
        """One line for ``systemctl status`` and the logs."""
        s = self.stats
        line = (f"{s.source_state}; {self._rate_fps:.1f} fps; queue {len(self.live)}/"
                f"{self.live.maxsize}; spool {len(self.spool)} frames "
                f"{self.spool.bytes / 1e6:.1f} MB; sent {s.delivered} (late {s.late}); "
                f"dropped {s.dropped}; evicted {s.evicted}; spool failed {s.spool_failed}; "
                f"rejected {s.rejected}; superseded {s.superseded}; skipped {s.skipped}; "
                f"ingest {s.ingest_state}")
        if s.last_error:
            line += f"; last error: {s.last_error}"
        return line

    def healthy(self, max_age_s: float) -> bool:
        """Both threads alive and looping within ``max_age_s``."""
        now = time.monotonic()
        for name, thread in zip(("capture", "upload"), self._threads, strict=False):
            if not thread.is_alive():
                if name == "capture" and self.capture_done.is_set():
                    continue
                return False
            if now - self.heartbeat.get(name, now) > max_age_s:
                return False
        return True

    def write_stats(self) -> None:
        """Write the counters to ``stats_path`` as JSON (if set)."""
        if self.stats_path is None:
            return
        data = self.stats.snapshot()
        data.update(spool_frames=len(self.spool), spool_bytes=self.spool.bytes,
                    queue=len(self.live), status=self.status_line())
        try:
            write_atomic(self.stats_path, json.dumps(data, indent=1).encode(), sync=False)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.stats_path, exc)

    def run(self, on_tick: Callable[[], None] | None = None) -> int:
        """Run until stopped or done; returns the exit code."""
        self._threads = [threading.Thread(target=self.capture_loop, name="capture", daemon=True),
                         threading.Thread(target=self.upload_loop, name="upload", daemon=True)]
        for t in self._threads:
            t.start()
        self.notifier.ready(f"starting: {self.source.name}")
        wd = self.notifier.watchdog_s
        tick = min(x for x in (wd / 3 if wd else 0, self.status_interval_s, 1.0) if x > 0)
        last_status = last_log = last_stats = time.monotonic()
        last_delivered = 0
        last_states = ("", "")
        while not self.upload_done.wait(tick):
            now = time.monotonic()
            if wd:
                if self.healthy(self.stall_s):
                    self.notifier.watchdog()
                elif not self._stall_logged:
                    self._stall_logged = True
                    log.error("a worker thread is stuck; no more watchdog pings, systemd will "
                              "restart the service")
            states = (self.stats.source_state, self.stats.ingest_state)
            if states != last_states:  # camera or ingest changed: show it at once
                last_states = states
                self.notifier.status(self.status_line())
            if now - last_status >= self.status_interval_s:
                delivered = self.stats.delivered
                inst = (delivered - last_delivered) / (now - last_status)
                self._rate_fps = inst if not self._rate_fps else 0.5 * self._rate_fps + 0.5 * inst
                last_delivered, last_status = delivered, now
                self.notifier.status(self.status_line())
            if now - last_log >= self.log_interval_s:
                log.info("status: %s", self.status_line())
                last_log = now
            if now - last_stats >= 60:
                self.write_stats()
                last_stats = now
            if on_tick:
                on_tick()
        self.stop_event.set()
        self.notifier.stopping()
        for t in self._threads:
            t.join(5)
        for frame in self.live.drain():  # raced in after the upload thread wrapped up
            if self.spool.enabled:
                self._to_spool(frame)
            else:
                self.stats.add(dropped=1)
        self.write_stats()
        log.info("stopped: %s", self.status_line())
        return 1 if self.stats.source_state.startswith("failed") else 0
