"""Server-sent events (text/event-stream) from Flask, bounded.

A stream is fed by a generator that yields ``(event, data)`` pairs, or ``None`` when it has
nothing to say for a moment (it must do that at least every second or so). The wrapper sends a
comment line as a heartbeat every ``heartbeat_s`` of silence, which is also how a client that
went away is noticed (the write fails and the generator is closed), and ends the stream after
``max_age_s``; browsers reconnect by themselves after the ``retry`` delay.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

from flask import Response, stream_with_context
from prometheus_client import Gauge

SSE_CLIENTS = Gauge("cctv_web_sse_clients", "Open server-sent event streams", ["stream"])

Event = tuple[str, object]


class _Count:
    """Open streams in this process (for the web heartbeat)."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


OPEN_STREAMS = _Count()


def format_event(event: str, data: object) -> str:
    """One SSE message: ``event:`` line and the JSON ``data:`` line."""
    payload = json.dumps(data, separators=(",", ":"), default=str)
    return f"event: {event}\ndata: {payload}\n\n"


def _bounded(events: Iterator[Event | None], name: str, heartbeat_s: float,
             max_age_s: float, retry_ms: int) -> Iterator[str]:
    started = last_sent = time.monotonic()
    SSE_CLIENTS.labels(name).inc()
    OPEN_STREAMS.add(1)
    try:
        yield f"retry: {retry_ms}\n\n"
        for item in events:
            now = time.monotonic()
            if now - started > max_age_s:
                yield format_event("bye", {"reason": "max connection age; reconnect"})
                return
            if item is not None:
                yield format_event(*item)
                last_sent = now
            elif now - last_sent >= heartbeat_s:
                yield ": keep-alive\n\n"
                last_sent = now
    finally:
        close = getattr(events, "close", None)
        if close:
            close()
        SSE_CLIENTS.labels(name).dec()
        OPEN_STREAMS.add(-1)


def sse_response(events: Iterator[Event | None], *, name: str, max_age_s: float,
                 heartbeat_s: float = 15.0, retry_ms: int = 2000) -> Response:
    """A streaming ``text/event-stream`` response over ``events`` (see the module doc)."""
    resp = Response(stream_with_context(_bounded(events, name, heartbeat_s, max_age_s,
                                                 retry_ms)),
                    mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache, no-store"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp
