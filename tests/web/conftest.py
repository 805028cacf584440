"""Fixtures of the web tests: a running system (real redis-server, ingest, inference, web and a
camera sending the sample clip). The headless Chromium (``browser``) is in tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import RedisServer
from web_support import WebStack, wait_for


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[WebStack]:
    """One inference replica, web, and cam1 streaming at 8 fps with results flowing."""
    redis_server.client().flushall()
    s = WebStack(redis_server, tmp_path_factory.mktemp("webstack"))
    try:
        wait_for(lambda: s.leader() == "a", 90, "replica a to lead", s.services)
        s.send(("cam1",))
        wait_for(lambda: s.results("cam1") > 5, 60, "results for cam1", s.services)
        yield s
    finally:
        s.close()
