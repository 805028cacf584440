"""Redis connections with sane timeouts, and retry with backoff for services that must survive
Redis restarts."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import redis

log = logging.getLogger(__name__)
T = TypeVar("T")

#: errors that mean "Redis is not reachable right now" (restart, network cut, loading AOF)
REDIS_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    ConnectionResetError,
)


def connect(url: str, *, timeout_s: float = 2.0, name: str = "cctv") -> redis.Redis:
    """A client for ``url`` (bytes responses, bounded socket timeouts, keep-alive)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        socket_keepalive=True,
        health_check_interval=10,
        client_name=name,
        decode_responses=False,
    )


class Backoff:
    """Exponential backoff with full jitter: 0.05 s doubling to ``cap_s``."""

    def __init__(self, base_s: float = 0.05, cap_s: float = 2.0) -> None:
        self.base_s, self.cap_s, self.attempt = base_s, cap_s, 0

    def next_delay(self) -> float:
        """The delay before the next try; grows with each call until :meth:`reset`."""
        delay = min(self.cap_s, self.base_s * (2**self.attempt))
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


def wait_for_redis(client: redis.Redis, *, deadline_s: float = 30.0,
                   stop: Callable[[], bool] = lambda: False) -> bool:
    """Ping until Redis answers (True) or ``deadline_s`` passes / ``stop()`` (False)."""
    backoff = Backoff()
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and not stop():
        try:
            client.ping()
            return True
        except REDIS_DOWN_ERRORS as exc:
            delay = backoff.next_delay()
            log.warning("redis not reachable (%s); retrying in %.2fs", exc, delay)
            time.sleep(delay)
    return False
