"""Delivery of events to external receivers (the sinks in events/sinks/: webhooks with signed
batches, MQTT, ...).

Each receiver reads the ``cctv:events`` stream through its own consumer group, so receivers
are independent of each other and of the rules, and nothing is lost over a restart: entries
stay pending until they are delivered or dead-lettered.

* Batching: every ``batch_s`` the new entries (at most ``max_batch``) go out in one request
  (by default every 10 s); a backlog goes out batch after batch.
* Retries: connection errors, timeouts, 408, 429 and 5xx are retried with exponential backoff
  and jitter (``backoff_s`` doubling up to ``backoff_max_s``; a ``Retry-After`` within that is
  honoured). Other 4xx answers are final. After ``max_attempts`` (or a final answer) the batch
  is dead-lettered: acked, recorded in ``cctv:events:deadletter`` and counted.
* Signature: ``X-CCTV-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`` with
  ``X-CCTV-Timestamp``; receivers recompute it and reject old timestamps (docs/events.md).
* ``captions_only``: each event is reduced to id, type, camera, rule, time and caption; no
  images, boxes or track ids leave the site.
* Robustness: an entry of the stream that cannot be turned into an event (not what the events
  service writes) is dead-lettered on its own; an image file that cannot be read is left out
  of the event (logged); a receiver that answers garbage or closes the connection is a failed
  attempt like any other. Anything unexpected ends the delivery loop, not the thread: it is
  counted (``cctv_events_delivery_restarts_total``, ``restarts:<receiver>`` in
  ``cctv:events:stats``), logged with its traceback, and the loop starts again after a backoff,
  pending entries first.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from prometheus_client import Counter

from cctv.core import keys
from cctv.core.entries import EntryError, decode_event
from cctv.core.redisconn import REDIS_DOWN_ERRORS, is_redis_down
from cctv.events.storage import EventStore

log = logging.getLogger("cctv.events.delivery")

DELIVERED = Counter("cctv_events_delivered_total", "Events delivered to a receiver", ["receiver"])
FAILED = Counter("cctv_events_delivery_failures_total", "Failed delivery attempts (batches)",
                 ["receiver"])
DEADLETTERED = Counter("cctv_events_deadlettered_total", "Events given up after the last attempt",
                       ["receiver"])
REFUSED = Counter("cctv_events_delivery_refused_total",
                  "Webhook deliveries refused because the destination resolved to a loopback, "
                  "private, link-local or other non-public address", ["receiver"])
RESTARTS = Counter("cctv_events_delivery_restarts_total",
                   "Delivery loops restarted after an unexpected error", ["receiver"])
#: the longest pause before a crashed delivery loop starts again
RESTART_BACKOFF_MAX_S = 30.0

CONSUMER = "events"
USER_AGENT = "cctv-swarm-events/1"


class DeliveryError(Exception):
    """A delivery attempt failed; ``final`` when retrying cannot help."""

    def __init__(self, message: str, *, final: bool = False, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.final, self.retry_after_s = final, retry_after_s


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-CCTV-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str,
                     max_age_s: float = 300.0, now: float | None = None) -> bool:
    """What a receiver does: recompute the signature and refuse stale timestamps."""
    try:
        age = abs((time.time() if now is None else now) - float(timestamp))
    except ValueError:
        return False
    return age <= max_age_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def caption_only(event: dict) -> dict:
    """The privacy-preserving form of an event: no images, boxes or track ids."""
    return {k: event.get(k) for k in ("type", "id", "camera", "rule", "status", "start",
                                       "end", "caption")}


def iso_time(ms: float | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class Receiver:
    """One destination; subclasses implement :meth:`send`."""

    name: str
    batch_s: float
    max_batch: int
    max_attempts: int
    backoff_s: float
    backoff_max_s: float
    captions_only: bool

    def send(self, events: list[dict]) -> None:
        raise NotImplementedError


@dataclass
class _Pending:
    ids: list[str]
    events: list[dict]


class DeliveryWorker:
    """Reads the events stream through the receiver's consumer group and delivers batches."""

    def __init__(self, receiver: Receiver, client: redis.Redis, store: EventStore,
                 stop: threading.Event, *, images: tuple[str, ...] = ()) -> None:
        self.rx, self.redis, self.store, self.stop = receiver, client, store, stop
        self.group = keys.delivery_group(receiver.name)
        self.images = () if receiver.captions_only else images
        self.thread = threading.Thread(target=self.run, name=f"deliver-{receiver.name}",
                                       daemon=True)

    def start(self) -> DeliveryWorker:
        self.thread.start()
        return self

    def ensure_group(self) -> None:
        """Create the receiver's group at the stream's end (a new receiver gets new events)."""
        try:
            self.redis.xgroup_create(keys.EVENTS, self.group, id="$", mkstream=True)
            log.info("receiver %s: consumer group created", self.rx.name)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _payload(self, eid: bytes, fields: dict[bytes, bytes]) -> dict:
        entry = decode_event(eid, fields)
        ev = entry.record
        # "type" is the entry's (event.start, event.end, event); the rule's is "rule_type"
        out = {**ev, "type": entry.type, "rule_type": ev.get("type"),
               "start": iso_time(ev.get("start_ms")), "end": iso_time(ev.get("end_ms"))}
        if self.rx.captions_only:
            return caption_only(out)
        for kind in self.images:
            path = self.store.resolve(ev.get("crop" if kind == "crop" else "snapshot", ""))
            if path is None:
                continue
            try:
                out[f"{kind}_jpeg_b64"] = base64.b64encode(path.read_bytes()).decode()
            except OSError as exc:
                log.warning("receiver %s: event %s goes without its %s (%s)", self.rx.name,
                            ev.get("id"), kind, exc, extra={"receiver": self.rx.name})
        return out

    def _read(self, start: str, block_ms: int | None) -> _Pending:
        resp = self.redis.xreadgroup(self.group, CONSUMER, {keys.EVENTS: start},
                                     count=self.rx.max_batch, block=block_ms)
        ids, events, bad = [], [], []
        for _stream, entries in resp or []:
            for eid, fields in entries:
                if not fields:  # a pending entry trimmed from the stream has no fields
                    ids.append(eid.decode())
                    continue
                try:
                    payload = self._payload(eid, fields)
                except EntryError as exc:
                    bad.append((eid.decode(), f"not an event entry: {exc}"))
                    continue
                ids.append(eid.decode())
                events.append(payload)
        for eid, why in bad:  # each on its own: the good ones of the batch still go out
            log.error("receiver %s: entry %s of %s is not an event; dead-lettered", self.rx.name,
                      eid, keys.EVENTS, extra={"receiver": self.rx.name})
            self._done(_Pending([eid], []), delivered=False, why=why, bad=1)
        return _Pending(ids, events)

    def _deliver(self, batch: _Pending) -> None:
        """Send ``batch`` until delivered, final failure or the last attempt; then ack."""
        attempt = 0
        while True:
            attempt += 1
            try:
                if batch.events:
                    self.rx.send(batch.events)
                self._done(batch, delivered=True)
                return
            except DeliveryError as exc:
                FAILED.labels(self.rx.name).inc()
                self.store.count(f"failed:{self.rx.name}")
                if exc.final or attempt >= self.rx.max_attempts:
                    log.error("receiver %s: giving up on %d events after %d attempts (%s)",
                              self.rx.name, len(batch.events), attempt, exc,
                              extra={"receiver": self.rx.name})
                    self._done(batch, delivered=False, why=str(exc))
                    return
                delay = min(self.rx.backoff_max_s, self.rx.backoff_s * 2 ** (attempt - 1))
                delay = max(random.uniform(delay / 2, delay), min(exc.retry_after_s,
                                                                  self.rx.backoff_max_s))
                log.warning("receiver %s: attempt %d failed (%s); retrying in %.1f s",
                            self.rx.name, attempt, exc, delay,
                            extra={"receiver": self.rx.name, "attempt": attempt})
                if self.stop.wait(delay):
                    return  # stays pending; delivered after the restart

    def _done(self, batch: _Pending, *, delivered: bool, why: str = "", bad: int = 0) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(keys.EVENTS, self.group, *batch.ids)
        n = len(batch.events) + bad
        if delivered:
            pipe.hincrby(keys.EVENTS_STATS, f"delivered:{self.rx.name}", n)
        else:
            pipe.hincrby(keys.EVENTS_STATS, f"deadletter:{self.rx.name}", n)
            pipe.xadd(keys.EVENTS_DEADLETTER, {
                "receiver": self.rx.name, "ids": ",".join(batch.ids), "why": why,
                "events": json.dumps([e.get("id") for e in batch.events])},
                maxlen=10000, approximate=True)
        trimmed = len(batch.ids) - n
        if trimmed:  # pending entries the stream's cap removed before they could go out
            pipe.hincrby(keys.EVENTS_STATS, f"trimmed:{self.rx.name}", trimmed)
            log.warning("receiver %s: %d events left the stream before delivery "
                        "(CCTV_EVENTS_MAXLEN)", self.rx.name, trimmed)
        pipe.execute()
        (DELIVERED if delivered else DEADLETTERED).labels(self.rx.name).inc(n)
        if delivered and n:
            log.info("receiver %s: delivered %d events", self.rx.name, n,
                     extra={"receiver": self.rx.name, "events": n})

    def run(self) -> None:
        """Deliver until ``stop`` is set; an unexpected error restarts the delivery loop
        (counted, logged, after a backoff) instead of ending the thread."""
        backoff = 1.0
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self._serve()
                break
            except Exception:  # noqa: BLE001 - the loop's boundary: nothing may end it
                RESTARTS.labels(self.rx.name).inc()
                log.exception("receiver %s: delivery loop failed; restarting in %.0f s",
                              self.rx.name, backoff, extra={"receiver": self.rx.name})
                with contextlib.suppress(redis.RedisError):
                    self.store.count(f"restarts:{self.rx.name}")
            if time.monotonic() - started > 60:
                backoff = 1.0  # it had been working: not a crash loop
            if self.stop.wait(backoff):
                break
            backoff = min(RESTART_BACKOFF_MAX_S, backoff * 2)
        close = getattr(self.rx, "close", None)
        if close is not None:
            close()

    def _serve(self) -> None:
        """Deliver until ``stop`` is set; survives Redis outages and restarts (what was read
        but not delivered is still pending and goes first)."""
        pending_first, ready = True, False
        next_send = time.monotonic()
        while not self.stop.is_set():
            try:
                if not ready:
                    self.ensure_group()
                    ready = True
                if pending_first:
                    batch = self._read("0", None)
                    if batch.ids:
                        self._deliver(batch)
                    else:
                        pending_first = False
                    continue
                delay = next_send - time.monotonic()
                if delay > 0 and self.stop.wait(delay):
                    break
                batch = self._read(">", 1000 if self.rx.batch_s == 0 else None)
                next_send = time.monotonic() + self.rx.batch_s
                if batch.ids:
                    self._deliver(batch)
                    if len(batch.ids) >= self.rx.max_batch:
                        next_send = time.monotonic()  # a backlog: the next batch at once
            except (*REDIS_DOWN_ERRORS, redis.ResponseError) as exc:
                if is_redis_down(exc):  # also an isolated primary refusing writes
                    log.warning("receiver %s: redis unreachable (%s)", self.rx.name, exc)
                    pending_first, ready = True, False
                    if self.stop.wait(1.0):
                        break
                    continue
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("receiver %s: consumer group missing; re-creating", self.rx.name)
                pending_first, ready = True, False
