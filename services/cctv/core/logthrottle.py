"""Warnings about bad input, logged at most once per key (camera) per period.

A camera sending nothing but bad frames must not flood the log: the first warning is logged,
the next ones within the period are counted and the count goes with the next line logged.
"""

from __future__ import annotations

import logging
import threading
import time


class LogThrottle:
    """At most one warning per key every ``period_s`` (default a minute)."""

    def __init__(self, logger: logging.Logger, period_s: float = 60.0) -> None:
        self.logger, self.period_s = logger, period_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object, **extra: object) -> bool:
        """Log ``msg % args`` unless ``key`` logged within the period; True when logged."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            if len(self._last) > 10_000:  # bounded whatever the keys
                self._last.clear()
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += f" ({suppressed} more like this in the last {self.period_s:.0f}s)"
        self.logger.warning(msg, *args, extra={"camera": key, **extra})
        return True
