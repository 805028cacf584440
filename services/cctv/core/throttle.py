"""A per-key failure throttle (ingest: failed camera tokens per client address).

Each key keeps the times of its recent failures; a key with ``limit`` failures inside the last
``window_s`` seconds is blocked until the oldest of them leaves the window. Memory is bounded:
at most ``max_keys`` keys are tracked, the least recently failed ones are forgotten first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque


class FailureThrottle:
    """Sliding-window failure counts per key (thread-safe, in process memory)."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 10000) -> None:
        self.limit, self.window_s, self.max_keys = limit, window_s, max_keys
        self._fails: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _trim(self, times: deque[float], now: float) -> None:
        while times and now - times[0] >= self.window_s:
            times.popleft()

    def blocked_for(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` may try again; 0 when it is not blocked."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._fails.get(key)
            if not times:
                return 0.0
            self._trim(times, now)
            if len(times) < self.limit:
                return 0.0
            return max(0.0, times[-self.limit] + self.window_s - now)

    def failed(self, key: str, now: float | None = None) -> None:
        """Record one failure of ``key``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._fails.pop(key, None)
            if times is None:
                times = deque(maxlen=self.limit)
            self._trim(times, now)
            times.append(now)
            self._fails[key] = times  # most recent last
            while len(self._fails) > self.max_keys:
                self._fails.popitem(last=False)
