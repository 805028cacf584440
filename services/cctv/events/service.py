"""``cctv events``: rules on every configured camera's detection stream, events out.

The service reads ``cctv:det:{cam}`` through its own consumer group (``events``), so it never
slows inference and a restart resumes where it stopped: the rule state of a camera is saved
with the ack of each entry (one transaction), and entries read but not acked are read again
first. Event writes are idempotent, so a replayed entry emits nothing twice. One instance runs
(active-standby is not needed: a restart loses nothing and Swarm restarts it in seconds).

Per entry: rules (rules.py) -> for each firing: frame from the stream -> optional verifier on
the crop -> snapshot and crop files -> record, indexes and ``cctv:events`` entry (storage.py).
Beside it: one delivery thread per receiver (delivery.py), retention every
``CCTV_EVENTS_RETENTION_INTERVAL_S`` (retention.py), a heartbeat and /healthz, /readyz,
/metrics on ``CCTV_EVENTS_HTTP_BIND``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict
from http.server import ThreadingHTTPServer
from pathlib import Path

import redis
from prometheus_client import Counter, Gauge

from cctv.core import keys
from cctv.core.entries import EntryError, decode_result
from cctv.core.health_server import start_health_server
from cctv.core.heartbeat import Heartbeat
from cctv.core.logthrottle import LogThrottle
from cctv.core.redisconn import (
    REDIS_DOWN_ERRORS,
    Backoff,
    connect_settings,
    is_redis_down,
)
from cctv.core.signals import stop_on_signals
from cctv.events import retention, sinks
from cctv.events.captions import caption
from cctv.events.clips import ClipJobs, ClipWriter, clip_range
from cctv.events.config import EventsConfig, EventsConfigError, load_config
from cctv.events.delivery import DeliveryWorker
from cctv.events.rules import CameraRules, Firing, Observation
from cctv.events.settings import EventsSettings
from cctv.events.snapshots import FrameSource, SnapshotError, render
from cctv.events.storage import EventStore
from cctv.events.verify import Verdict, Verifier, VerifierError, crop_box, load_verifier

log = logging.getLogger("cctv.events")

EMITTED = Counter("cctv_events_emitted_total", "Events emitted", ["camera", "rule"])
UNCONFIRMED = Counter("cctv_events_unconfirmed_total",
                      "Rule firings the verifier rejected (no event emitted)", ["camera", "rule"])
ENTRIES = Counter("cctv_events_results_total", "Detection results evaluated", ["camera"])
BAD_RESULTS = Counter("cctv_events_bad_results_total",
                      "Result entries that do not decode (counted, acked, skipped)", ["camera"])
LAG = Gauge("cctv_events_lag_seconds", "Age of the last evaluated result", ["camera"])

CONSUMER = "events"
READ_COUNT = 64
#: a clip is written this long after its last frame (plus margin) is due: time for the frames
#: to arrive
CLIP_SLACK_MS = 1000


class EventsService:
    """The rules loop of one events service process."""

    def __init__(self, settings: EventsSettings, config: EventsConfig) -> None:
        self.s, self.cfg = settings, config
        self.instance = f"{settings.node}-{os.getpid()}"
        self.redis = connect_settings(settings, name=f"cctv-events-{self.instance}")
        self.heartbeat = Heartbeat(self.redis, "events", settings.node, settings.heartbeat_s,
                                   fields=self._beat_fields,
                                   on_beat=lambda _pipe: self._beat_done,
                                   instance=self.instance)
        self.store = EventStore(self.redis, settings.events_dir, settings.events_maxlen,
                                replicas=settings.redis_min_replicas_ack,
                                wait_timeout_ms=settings.redis_wait_timeout_ms)
        self.stop = threading.Event()
        self.engines: dict[str, CameraRules] = {}
        self.verifiers: dict[tuple[str, str], Verifier] = {}
        self.workers: list[DeliveryWorker] = []
        self.redis_ok_at = 0.0
        self.running = False
        self.started = time.time()
        self.lag_ms = 0.0
        self._warned_untracked: set[str] = set()
        self._bad_input = LogThrottle(log)
        self._next_retention = 0.0
        # camera -> (monotonic time, capture ms) of its last result, for tick()
        self._last_seen: dict[str, tuple[float, float]] = {}

    # ---- start ---------------------------------------------------------------------------
    def load_verifiers(self) -> None:
        """Load every rule's verifier model (at start: a bad model fails fast)."""
        for cam in self.cfg.cameras.values():
            for rule in cam.rules:
                if rule.verify is not None:
                    self.verifiers[(cam.name, rule.name)] = load_verifier(rule.verify)

    def receivers(self) -> list[DeliveryWorker]:
        """One delivery worker per receiver a sink (events/sinks/) configures (not started)."""
        out = []
        for sink in sinks.sinks():
            section = self.cfg.sinks.get(sink.key, sink.default)
            for route in sink.receivers(section, self.s, self.cfg.path):
                out.append(DeliveryWorker(route.receiver, self.redis, self.store, self.stop,
                                          images=route.images))
        return out

    def ensure_groups(self) -> None:
        """The ``events`` group on each configured camera's results (new results only)."""
        for cam in self.cfg.cameras:
            try:
                self.redis.xgroup_create(keys.detections(cam), keys.EVENTS_GROUP, id="$",
                                         mkstream=True)
                log.info("camera %s: consumer group %s created", cam, keys.EVENTS_GROUP)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def load_engines(self) -> None:
        """Every camera's rules with the state saved by the last run."""
        for name, cam in self.cfg.cameras.items():
            raw = self.redis.get(keys.rules_state(name))
            state = None
            if raw:
                try:
                    state = json.loads(raw)
                except ValueError:
                    log.warning("camera %s: saved rule state unreadable; starting fresh", name)
            self.engines[name] = CameraRules(cam, track_timeout_s=self.cfg.track_timeout_s,
                                             exit_grace_s=self.cfg.exit_grace_s, state=state)
            log.info("camera %s: %d rules, %d open events", name, len(cam.rules),
                     self.engines[name].open_events(), extra={"camera": name})

    # ---- one result ----------------------------------------------------------------------
    def observation(self, cam: str, entry_id: str, fields: dict[bytes, bytes]) -> Observation:
        """A results entry as the rules see it; raises :class:`EntryError` when it does not
        decode (core.entries.decode_result: every field typed, every detection checked)."""
        r = decode_result(entry_id, fields)
        return Observation(cam, entry_id, r.frame, r.ts_ms, r.dets_json(), r.w, r.h)

    def bad_result(self, cam: str, entry_id: str, exc: EntryError) -> None:
        """Count, log (once per camera per minute) and ack a result entry that does not decode;
        the camera's rule state is left as it was."""
        BAD_RESULTS.labels(cam).inc()
        self._bad_input.warning(cam, "camera %s: result %s does not decode, skipped: %s", cam,
                                entry_id, exc)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(keys.EVENTS_STATS, "bad_results", 1)
        pipe.hincrby(keys.EVENTS_STATS, f"bad_results:{cam}", 1)
        pipe.xack(keys.detections(cam), keys.EVENTS_GROUP, entry_id)
        pipe.execute()

    def handle(self, cam: str, entry_id: str, fields: dict[bytes, bytes]) -> None:
        """Evaluate one result, act on its firings, save the state and ack, in that order."""
        engine = self.engines[cam]
        if fields:
            obs = self.observation(cam, entry_id, fields)
            self._warn_untracked(cam, obs)
            frames = FrameSource(self.redis, cam)
            frames.remember(obs.det_id, obs.dets)
            for firing in engine.observe(obs):
                self.act(firing, obs, frames)
            ENTRIES.labels(cam).inc()
            self._last_seen[cam] = (time.monotonic(), obs.ts_ms)
            self.lag_ms = max(0.0, time.time() * 1000 - int(entry_id.split("-")[0]))
            LAG.labels(cam).set(self.lag_ms / 1000)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.rules_state(cam), json.dumps(engine.state, separators=(",", ":")))
        pipe.xack(keys.detections(cam), keys.EVENTS_GROUP, entry_id)
        pipe.execute()

    def tick(self) -> None:
        """Let time pass for a camera that went silent: after ``track_timeout_s`` without a
        result its tracks are lost and its open events end, instead of staying open until the
        camera comes back."""
        now = time.monotonic()
        for cam, engine in self.engines.items():
            seen = self._last_seen.get(cam)
            if seen is None or now - seen[0] < self.cfg.track_timeout_s:
                continue
            if not engine.state["tracks"] and not engine.open_events():
                continue
            obs = Observation(cam, "", "", seen[1] + (now - seen[0]) * 1000, [])
            for firing in engine.observe(obs):
                self.act(firing, obs, FrameSource(self.redis, cam))
            self._last_seen[cam] = (now, obs.ts_ms)
            self.redis.set(keys.rules_state(cam), json.dumps(engine.state, separators=(",", ":")))

    def _warn_untracked(self, cam: str, obs: Observation) -> None:
        if cam in self._warned_untracked or not obs.dets:
            return
        if any(d.get("track") is not None for d in obs.dets):
            self._warned_untracked.add(cam)  # tracks are there: nothing to say
            return
        if any(r.type in ("dwell", "line") for r in self.cfg.cameras[cam].rules):
            log.warning("camera %s: detections carry no track ids (CCTV_TRACKER=none or no "
                        "ultralytics in the inference image): dwell and line rules cannot "
                        "fire", cam, extra={"camera": cam})
            self._warned_untracked.add(cam)

    def verify(self, firing: Firing, frames: FrameSource) -> tuple[bool, Verdict | None]:
        """Run the rule's verifier on the firing's crops: (confirmed, the first verdict)."""
        verifier = self.verifiers.get((firing.camera, firing.rule.name))
        if verifier is None:
            return True, None
        need = firing.rule.count if firing.rule.type == "count" else 1
        confirmed, first = 0, None
        for s in firing.subjects:
            img = frames.image(s.frame_id)
            if img is None:
                continue
            verdict = verifier.check(crop_box(img, s.xyxy, verifier.cfg.padding))
            first = first or verdict
            confirmed += verdict.confirmed
            if confirmed >= need:
                return True, verdict
        return False, first

    def act(self, f: Firing, obs: Observation, frames: FrameSource) -> None:
        """Turn one firing into an event (or an unconfirmed count)."""
        if f.kind == "end":
            self._close(f, obs, frames)
            return
        ok, verdict = self.verify(f, frames)
        self.engines[f.camera].commit(f, ok)
        if not ok:
            UNCONFIRMED.labels(f.camera, f.rule.name).inc()
            # counted once per candidate, also when a restart replays its result
            if self.redis.set(keys.unconfirmed(f.event_id), 1, nx=True, ex=86400):
                pipe = self.redis.pipeline(transaction=False)
                pipe.hincrby(keys.EVENTS_STATS, "unconfirmed", 1)
                pipe.hincrby(keys.EVENTS_STATS, f"unconfirmed:{f.camera}:{f.rule.name}", 1)
                pipe.execute()
            log.info("camera %s: rule %s not confirmed by its verifier (%s); no event",
                     f.camera, f.rule.name, verdict.summary() if verdict else "frame gone",
                     extra={"camera": f.camera, "rule": f.rule.name})
            return
        s0 = f.subjects[0] if f.subjects else None
        record = {
            "id": f.event_id, "camera": f.camera, "rule": f.rule.name, "type": f.rule.type,
            "status": "closed" if f.kind == "instant" else "open",
            "start_ms": f.start_ms, "end_ms": f.end_ms, "last_ms": obs.ts_ms, "reason": "",
            "track": s0.track if s0 else None,
            "tracks": sorted({s.track for s in f.subjects if s.track is not None}),
            "class": s0.name if s0 else "", "classes": sorted({s.name for s in f.subjects}),
            "zone": f.zone, "line": f.line, "direction": f.direction, "count": f.count,
            "conf": s0.conf if s0 else 0.0, "box": s0.xyxy if s0 else [],
            "subjects": [asdict(s) for s in f.subjects],
            "first_frame": f.first_frame, "last_frame": f.last_frame,
            "frame": s0.frame_id if s0 else "", "det": s0.det_id if s0 else "",
            "width": obs.w, "height": obs.h, "snapshot": "", "crop": "",
            "verified": "yes" if verdict else "not required",
            "verifier": verdict.summary() if verdict else "",
        }
        self._images(record, f, frames)
        record["caption"] = caption(record, self.cfg.tz)
        if self.store.emit(f.kind, record):
            EMITTED.labels(f.camera, f.rule.name).inc()
            if f.kind == "instant":
                self.schedule_clip(record)
            if f.rule.type == "line":
                self.redis.hincrby(keys.line_counts(f.camera), f"{f.rule.name}:{f.direction}", 1)
            log.info("event %s: %s", f.event_id, record["caption"],
                     extra={"camera": f.camera, "rule": f.rule.name, "event": f.event_id})

    def _images(self, record: dict, f: Firing, frames: FrameSource) -> None:
        """Snapshot and crop files of the event; a failure costs the images, not the event."""
        try:
            rendered = render(frames, self.cfg.cameras[f.camera], f.rule, f.subjects)
        except SnapshotError as exc:
            self.store.failure("snapshot", f.event_id, str(exc))
            return
        if rendered is None:
            log.warning("event %s: its frame has left the stream; no snapshot", f.event_id)
            return
        snap_rel, crop_rel = self.store.image_paths(record, self.cfg.tz)
        try:
            self.store.write_files({snap_rel: rendered[0], crop_rel: rendered[1]})
        except OSError as exc:  # a full or read-only disk
            self.store.failure("storage", f.event_id, f"cannot write {snap_rel}: {exc}")
            return
        record["snapshot"], record["crop"] = snap_rel, crop_rel

    def _close(self, f: Firing, obs: Observation, frames: FrameSource) -> None:
        record = self.store.get(f.event_id)
        if record is None or record.get("status") != "open":
            return  # deleted by retention meanwhile, or a replay
        record.update(status="closed", end_ms=f.end_ms, last_ms=obs.ts_ms, reason=f.reason,
                      last_frame=f.last_frame, count=max(int(record.get("count") or 0), f.count))
        better = f.subjects and f.subjects[0].conf > float(record.get("conf") or 0) + 0.05
        if better or not record.get("snapshot"):
            before = (record["snapshot"], record["crop"])
            self._images(record, f, frames)
            if (record["snapshot"], record["crop"]) != before and f.subjects:
                s0 = f.subjects[0]
                record.update(conf=s0.conf, box=s0.xyxy, frame=s0.frame_id, det=s0.det_id)
        record["caption"] = caption(record, self.cfg.tz)
        if self.store.emit("end", record):
            self.schedule_clip(record)
            log.info("event %s ended: %s", f.event_id, record["caption"],
                     extra={"camera": f.camera, "rule": f.rule.name, "event": f.event_id})

    def schedule_clip(self, record: dict) -> None:
        """Have the clip writer keep the event's clip once its post-margin has passed (and its
        last frames have had a second to arrive)."""
        _lo, hi = clip_range(record, self.cfg.clip_margin_s * 1000)
        ClipJobs(self.redis).schedule(record["id"], hi + CLIP_SLACK_MS)

    # ---- the loop ------------------------------------------------------------------------
    def read(self, pending: bool) -> list[tuple[str, str, dict]]:
        """Entries to handle: this consumer's pending ones (after a restart) or new ones."""
        streams = {keys.detections(c): ("0" if pending else ">") for c in self.cfg.cameras}
        if not streams:
            self.stop.wait(0.5)
            return []
        resp = self.redis.xreadgroup(keys.EVENTS_GROUP, CONSUMER, streams, count=READ_COUNT,
                                     block=None if pending else 500)
        out = []
        for stream, entries in resp or []:
            cam = stream.decode().removeprefix(keys.detections(""))
            out += [(cam, eid.decode(), fields) for eid, fields in entries]
        return out

    def maybe_retention(self) -> None:
        """Run a retention pass when one is due (in this thread: no race with file writes)."""
        if time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + self.s.events_retention_interval_s
        retention.enforce(self.store, max_age_s=self.s.events_retention_days * 86400,
                          max_count=self.s.events_max_count, max_bytes=self.s.events_max_bytes)

    def run(self) -> None:
        """Evaluate until ``stop``; reconnects with backoff when Redis goes away."""
        backoff = Backoff(cap_s=2.0)
        prepared = False
        pending = True
        while not self.stop.is_set():
            try:
                if not prepared:
                    self.ensure_groups()
                    self.load_engines()
                    prepared, pending = True, True
                    self.running = True
                self.maybe_retention()
                batch = self.read(pending)
                self.redis_ok_at = time.monotonic()
                backoff.reset()
                if pending and not batch:
                    pending = False
                for cam, eid, fields in batch:
                    try:
                        self.handle(cam, eid, fields)
                    except EntryError as exc:
                        self.bad_result(cam, eid, exc)
                if not pending:
                    self.tick()
            except (*REDIS_DOWN_ERRORS, redis.ResponseError) as exc:
                if not is_redis_down(exc):  # an isolated primary refusing writes is "down"
                    if "NOGROUP" not in str(exc):
                        raise
                    log.warning("consumer group missing (%s); re-creating", exc)
                    prepared = False
                    continue
                prepared = False
                delay = backoff.next_delay()
                log.warning("redis unreachable (%s); retrying in %.2fs", exc, delay)
                self.stop.wait(delay)

    # ---- heartbeat and health --------------------------------------------------------------
    def _beat_fields(self) -> dict[str, object]:
        return {"role": "events", "lag_ms": f"{self.lag_ms:.0f}",
                "cameras": ",".join(sorted(self.cfg.cameras)), "started": f"{self.started:.3f}"}

    def _beat_done(self, ok: bool) -> None:
        if ok:
            self.redis_ok_at = time.monotonic()


def _health_server(svc: EventsService) -> ThreadingHTTPServer:
    def ready() -> tuple[bool, dict]:
        ok = svc.running and time.monotonic() - svc.redis_ok_at < 5
        return ok, {"ready": ok}

    return start_health_server(svc.s.events_http_bind, ready, svc.s.metrics_token)


def run_events(settings: EventsSettings) -> int:
    """Run the events service until SIGTERM/SIGINT; returns the process exit code."""
    if not settings.events_config:
        log.error("CCTV_EVENTS_CONFIG is not set: give the zones/rules file (docs/events.md)")
        return 2
    media = Path(settings.events_dir)
    try:
        media.mkdir(parents=True, exist_ok=True)
        if not os.access(media, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        log.error("CCTV_EVENTS_DIR=%s: cannot write snapshots there: %s", media,
                  exc.strerror or exc)
        return 2
    try:
        config = load_config(settings.events_config)
        svc = EventsService(settings, config)
        workers = svc.receivers()
        svc.load_verifiers()
    except (EventsConfigError, VerifierError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2

    stop_on_signals(svc.stop, log, "stopping after the current result")
    try:
        server = _health_server(svc)
    except OSError as exc:
        log.error("cannot listen on CCTV_EVENTS_HTTP_BIND=%s: %s", settings.events_http_bind, exc)
        return 2
    svc.heartbeat.start()
    clips = ClipWriter(svc.store, config.clip_margin_s * 1000, config.tz, svc.stop)
    for w in [*workers, clips]:
        w.start()
    log.info("events service %s: %d cameras, %d rules, %d receivers, files in %s",
             svc.instance, len(config.cameras),
             sum(len(c.rules) for c in config.cameras.values()), len(workers),
             settings.events_dir)
    svc.run()
    svc.heartbeat.stop()
    for w in [*workers, clips]:
        w.thread.join(5)
    server.shutdown()
    log.info("events service stopped")
    return 0
