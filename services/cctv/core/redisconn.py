"""Redis connections: one way for every service to reach the primary, with sane timeouts,
its own ACL user, and retry with backoff for services that must survive Redis restarts and
failovers.

Two ways to find Redis (``docs/configuration.md``, "Redis"):

* ``CCTV_REDIS_URL``: one Redis server (local mode, tests, a single-node stack);
* ``CCTV_REDIS_SENTINELS`` (``host:port,host:port,...``) with ``CCTV_REDIS_MASTER_NAME``: the
  client asks the Sentinels for the current primary (``redis.sentinel.Sentinel.master_for``)
  each time it (re)connects, so after a failover the next command goes to the promoted replica.

A connection to a primary that was demoted answers writes with ``READONLY``; the Sentinel-managed
connection turns that into a ``ConnectionError`` and rediscovers the primary. Commands are
retried a few times on connection errors with a short jittered backoff (at most ~1 s in all);
beyond that the error reaches the service loop, which backs off by itself (:class:`Backoff`).
Every write the services repeat after an ambiguous error is idempotent by design: ingest dedupes
on (camera, seq), results and drops are acked-once under the fence, events are written once per id.

``CCTV_REDIS_USERNAME`` / ``CCTV_REDIS_PASSWORD`` (or ``_FILE``) authenticate as the service's
ACL user (``core/redis_acl.py``); the same credentials are used on every Redis node.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from cctv.core.settings import parse_sentinels

if TYPE_CHECKING:
    from cctv.core.settings import CoreSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

#: errors that mean "Redis is not reachable right now" (restart, network cut, loading AOF, a
#: failover in progress: a demoted primary refusing writes, no primary known to the Sentinels)
REDIS_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.ReadOnlyError,
    ConnectionResetError,
)

#: retries inside one command: 3 tries after the first, 50 ms doubling to 400 ms, jittered
COMMAND_RETRIES = 3


def _retry() -> Retry:
    return Retry(ExponentialWithJitterBackoff(cap=0.4, base=0.05), COMMAND_RETRIES,
                 supported_errors=(redis.ConnectionError, redis.TimeoutError, OSError))


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is and who we are there."""

    url: str = "redis://127.0.0.1:6379/0"
    #: (host, port) of each Sentinel; empty = connect to ``url`` directly
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = "cctv"
    username: str | None = None
    password: str | None = None
    #: password of the Sentinels themselves (None: they need none)
    sentinel_password: str | None = None
    db: int = 0

    @classmethod
    def from_settings(cls, s: CoreSettings) -> RedisTarget:
        """The target the ``CCTV_REDIS_*`` settings describe."""
        return cls(url=s.redis_url, sentinels=parse_sentinels(s.redis_sentinels),
                   master_name=s.redis_master_name, username=s.redis_username or None,
                   password=s.redis_password or None,
                   sentinel_password=s.redis_sentinel_password or None)

    def describe(self) -> str:
        """For log lines and error messages (no secret)."""
        user = f"{self.username}@" if self.username else ""
        if self.sentinels:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"{user}sentinel://{hosts}/{self.master_name}"
        return f"{user}{self.url}"


def _options(timeout_s: float, name: str) -> dict:
    return {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
            "socket_keepalive": True, "health_check_interval": 10, "client_name": name,
            "decode_responses": False, "retry": _retry()}


def connect(target: str | RedisTarget, *, timeout_s: float = 2.0,
            name: str = "cctv") -> redis.Redis:
    """A client of the Redis primary (bytes responses, bounded socket timeouts, keep-alive,
    retry on connection errors). ``target`` is a URL or a :class:`RedisTarget`."""
    if isinstance(target, str):
        target = RedisTarget(url=target)
    opts = _options(timeout_s, name)
    if target.username:
        opts["username"] = target.username
    if target.password:
        opts["password"] = target.password
    if not target.sentinels:
        return redis.Redis.from_url(target.url, **opts)
    sentinel_kwargs = {"socket_timeout": min(timeout_s, 1.0),
                       "socket_connect_timeout": min(timeout_s, 1.0)}
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs, db=target.db)
    return sentinel.master_for(target.master_name, redis_class=redis.Redis, **opts)


def connect_settings(s: CoreSettings, *, timeout_s: float = 2.0, name: str = "cctv") -> redis.Redis:
    """:func:`connect` to the Redis the settings describe (URL or Sentinels, ACL user)."""
    return connect(RedisTarget.from_settings(s), timeout_s=timeout_s, name=name)


class NotReplicated(redis.ConnectionError):
    """A write reached the primary but not enough replicas within the timeout: a failover now
    could lose it, so it must not be acknowledged as durable. ``replies`` holds the replies of
    the commands (they did run on the primary)."""

    def __init__(self, message: str, replies: list | None = None) -> None:
        super().__init__(message)
        self.replies = replies or []


def is_noreplicas_error(exc: BaseException) -> bool:
    """True when Redis refused a write because too few replicas are connected
    (``min-replicas-to-write``: an isolated primary)."""
    return isinstance(exc, redis.ResponseError) and "NOREPLICAS" in str(exc)


def is_redis_down(exc: BaseException) -> bool:
    """True for every error that means "no writable primary right now": unreachable, failing
    over, or isolated (refusing writes for want of replicas)."""
    return isinstance(exc, REDIS_DOWN_ERRORS) or is_noreplicas_error(exc)


def durable(client: redis.Redis, replicas: int, timeout_ms: int,
            write: Callable[[redis.Redis], object]) -> list:
    """``write(pipe)`` queues one write (a script call with ``client=pipe``, say); send it and
    ``WAIT replicas timeout_ms`` in one round trip on one connection (WAIT counts the writes
    of its own connection) and return ``[its reply]``. Raise :class:`NotReplicated` when fewer
    than ``replicas`` replicas acknowledged it. With ``replicas`` 0 it is ``[write(client)]``:
    no pipeline, no WAIT."""
    if replicas <= 0:
        return [write(client)]
    pipe = client.pipeline(transaction=False)
    write(pipe)
    pipe.execute_command("WAIT", replicas, timeout_ms)
    *replies, acked = pipe.execute()
    if int(acked) < replicas:
        raise NotReplicated(f"write reached {acked} of {replicas} replica(s) within "
                            f"{timeout_ms} ms", replies)
    return replies


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
