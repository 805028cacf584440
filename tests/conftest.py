"""Shared pytest fixtures: a real redis-server per test module, service processes, fixtures dir."""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ for the guards

from support import SHARED, RedisServer, Service, service_env, start_listening  # noqa: E402

# ---- no silent skips in CI -------------------------------------------------------------------
#: Tests that may skip in CI (CI set to any non-empty value), as fnmatch patterns of node ids.
#: Every other skip fails the run there: a missing tool is a broken set-up, not a pass.
CI_SKIP_ALLOWED: dict[str, str] = {
    # `docker stack config` without a daemon needs a docker client newer than Debian's
    # docker.io (20.10); the swarm drill stage deploys the same files for real
    "tests/stack/test_stack_files.py::test_docker_stack_config_validates*":
        "needs a docker client newer than 20.10",
}


def in_ci() -> bool:
    """True when the CI variable is set to any non-empty value."""
    return bool(os.environ.get("CI", ""))


def _skip_allowed(nodeid: str) -> bool:
    return any(fnmatch.fnmatchcase(nodeid, pat) for pat in CI_SKIP_ALLOWED)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (f"skipped in CI ({reason}); install what the test needs (./dev setup) "
                       "or add it to CI_SKIP_ALLOWED in tests/conftest.py with a reason")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI, a skip (not an expected failure) outside CI_SKIP_ALLOWED is a failure."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail") \
            and not _skip_allowed(item.nodeid):
        _fail_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """In CI, a whole module skipped at import (pytest.importorskip) is a failure too."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not _skip_allowed(report.nodeid):
        _fail_skip(report)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, for one test module."""
    server = RedisServer().start()
    yield server
    denials = server.acl_denials()
    server.stop()
    assert not denials, "the Redis ACL refused commands of a service:\n" + "\n".join(denials)


@pytest.fixture()
def rdb(redis_server: RedisServer):
    """A client of the module's redis-server, flushed before each test. The test fails when
    the Redis ACL refused anything meanwhile (a service's user lacks a permission)."""
    client = redis_server.client()
    client.flushall()
    redis_server.acl_denials()
    yield client
    client.close()
    denials = redis_server.acl_denials()
    assert not denials, "the Redis ACL refused commands of a service:\n" + "\n".join(denials)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The fixtures folder (models, media): $CCTV_SHARED or ../shared."""
    if not SHARED.is_dir():
        pytest.fail(f"fixtures folder {SHARED} not found; set CCTV_SHARED")
    return SHARED


@pytest.fixture()
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    """Where a test leaves files worth looking at (logs, screenshots)."""
    base = Path(os.environ.get("CCTV_TEST_ARTIFACTS", Path(__file__).resolve().parents[1]
                               / "artifacts"))
    path = base / request.node.name.replace("/", "_")[:80]
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture()
def start_ingest(redis_server: RedisServer, tmp_path: Path):
    """Start a real ingest (gunicorn) process: ``start_ingest(**CCTV_settings) -> (url, svc)``."""
    started: list[Service] = []

    def start(**cctv: object) -> tuple[str, Service]:
        cctv.setdefault("cameras", "cam1:tok1-16charsfortests,cam2:tok2-16charsfortests")
        cctv.setdefault("ingest_workers", 1)

        def launch(port: int) -> Service:
            env = service_env(redis_server.url, ingest_bind=f"127.0.0.1:{port}", **cctv)
            svc = Service(["ingest"], env, tmp_path, f"ingest-{port}")
            started.append(svc)
            return svc

        port, svc = start_listening(launch)
        return f"http://127.0.0.1:{port}", svc

    yield start
    for svc in started:
        svc.stop()


# ---- the browser ------------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")


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


