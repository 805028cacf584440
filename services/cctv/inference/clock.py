"""Redis server time as seen from this replica (stream ids carry server milliseconds)."""

from __future__ import annotations

import time

import redis


class RedisClock:
    """Redis server time, re-synchronised every 5 s; frame ages are measured with it, so node
    clocks do not matter."""

    def __init__(self, client: redis.Redis) -> None:
        self.client, self.offset_s, self._synced = client, 0.0, 0.0

    def now_ms(self) -> float:
        """Redis server time now, in milliseconds."""
        if time.monotonic() - self._synced > 5:
            before = time.time()
            sec, usec = self.client.time()
            after = time.time()
            self.offset_s = sec + usec / 1e6 - (before + after) / 2
            self._synced = time.monotonic()
        return (time.time() + self.offset_s) * 1000
