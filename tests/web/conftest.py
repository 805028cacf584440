"""Fixtures of the web tests: a running system (real redis-server, ingest, inference, web and a
camera sending the sample clip) and a headless Chromium driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from support import RedisServer
from web_support import CHROMIUM, WebStack, wait_for


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


# ---- the browser ------------------------------------------------------------------------------

def _browser_unavailable_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium; ./dev setup does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (no browser download). Skipped when
    Chromium or Playwright is missing, except in CI (CI set to anything), where that fails."""
    reason = _browser_unavailable_reason()
    if reason:
        if os.environ.get("CI", ""):
            pytest.fail(f"browser tests cannot run in CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    args = ["--disable-gpu", "--disable-dev-shm-usage"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield b
        finally:
            b.close()


