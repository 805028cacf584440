"""The viewer and the dashboard in a real browser (Debian's Chromium, headless, Playwright):
log in, the grid's live frames change, a camera's detections arrive, the dashboard shows the
leader; kill -9 the leader and the dashboard shows the new one and the failover within
seconds. Screenshots go to the test artifacts (and to docs/screenshots/ with
UPDATE_DOCS_SCREENSHOTS=1)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from support import RedisServer, until
from web_support import WebStack, login, save_screenshot, wait_for


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[WebStack]:
    """Two inference replicas (a leads, b is the warm standby), web, two cameras streaming."""
    redis_server.client().flushall()
    s = WebStack(redis_server, tmp_path_factory.mktemp("browserstack"), replicas=())
    try:
        a = s.replica("a")
        wait_for(lambda: s.leader() == "a", 90, "replica a to lead", [a])
        b = s.replica("b")
        wait_for(lambda: s.rdb.hget("cctv:hb:inference:b", "role") == b"standby", 90,
                 "replica b to stand by", [b])
        s.send(("cam1", "cam2"), fps=6)
        wait_for(lambda: s.results("cam1") > 3 and s.results("cam2") > 3, 60,
                 "results of both cameras", s.services)
        yield s
    finally:
        s.close()




def _pixels(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.int16)


def test_viewer_and_dashboard_in_a_browser(browser, cluster: WebStack,
                                           artifacts_dir: Path) -> None:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    # every Content-Security-Policy violation of every page is reported to the console (the
    # init script is injected by the browser's debugger, which the CSP does not govern)
    ctx.add_init_script("""document.addEventListener('securitypolicyviolation', e =>
        console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));""")
    page = ctx.new_page()
    errors: list[str] = []
    csp: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: csp.append(msg.text)
            if "Content Security Policy" in msg.text or "CSP violation" in msg.text else None)
    try:
        _run(page, cluster, artifacts_dir)
        # the pages not visited above, and a probe that the report works at all
        for path in ("/events", "/login"):
            if page.request.get(cluster.url + path).status == 200:
                page.goto(cluster.url + path)
        page.wait_for_timeout(300)
        assert not csp, f"CSP violations: {csp}"
        page.evaluate("""() => { const s = document.createElement('div');
            s.setAttribute('style', 'color: red'); document.body.append(s); }""")
        page.wait_for_timeout(300)
        assert any("style-src" in m for m in csp), "an inline style must be reported"
    except Exception:
        save_screenshot(page.screenshot(full_page=True), artifacts_dir / "failure.png",
                        docs=False)
        cluster.save_logs(artifacts_dir)
        raise
    finally:
        ctx.close()
    assert not errors, errors


def _run(page, cluster: WebStack, artifacts: Path) -> None:
    url = cluster.url
    # anonymous: every page sends the browser to the login form
    first = page.goto(url + "/cluster")
    assert "/login" in page.url
    policy = first.all_headers()["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy, policy
    assert "object-src 'none'" in policy and "frame-ancestors 'none'" in policy
    page.fill("#user", "viewer")
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    assert "Wrong user name or password" in page.inner_text(".form-error")
    login(page, url, path="/")

    # the grid: both cameras live, the picture changes over time
    until(page, """() => [...document.querySelectorAll('img.live')]
        .every(i => i.naturalWidth > 0)""", 20)
    tile = page.locator('.tile[data-camera="cam1"] img.live')
    first = _pixels(tile.screenshot())
    time.sleep(1.5)
    second = _pixels(tile.screenshot())
    assert np.abs(first - second).mean() > 1.0, "the live frame does not change"
    until(page, """() => [...document.querySelectorAll('.badge.status')]
        .every(b => b.textContent === 'live')""", 15)
    save_screenshot(page.screenshot(), artifacts / "viewer-grid.png")
    if page.locator("nav a[href='/events']").count():
        assert page.request.get(url + "/events").status == 200

    # a camera page: detections arrive as they happen, figures update, snapshot downloads
    page.click('.tile[data-camera="cam1"]')
    page.wait_for_url("**/cameras/cam1")
    until(page, "document.querySelectorAll('#log tbody tr.new').length >= 3", 20)
    assert page.locator("#current .chip").count() > 0
    until(page, """() => document.querySelector('#c-fps_in .value').textContent
        !== '–'""", 10)
    assert page.inner_text("#cam-status") == "live"
    with page.expect_download() as dl:
        page.click("#snapshot")
    jpeg = Path(dl.value.path()).read_bytes()
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (480, 640, 3)
    assert dl.value.suggested_filename.startswith("cam1-")
    time.sleep(1)  # a fuller detections log for the screenshot
    save_screenshot(page.screenshot(full_page=True), artifacts / "viewer-camera.png")

    # the dashboard: leader a, standby b, both cameras, no red state
    page.click("nav a[href='/cluster']")
    until(page, "document.getElementById('leader-id').textContent === 'a'", 15)
    until(page, "document.getElementById('standby-ids').textContent === 'b'", 15)
    until(page, "document.querySelectorAll('#cameras tbody tr').length === 2", 10)
    assert page.locator(".alert.critical").count() == 0, page.inner_text("#alerts")
    assert "initial" in page.inner_text("#failovers")
    assert page.locator("#nodes tbody tr").count() >= 1
    until(page, """() => document.querySelector('#redis-nodes tbody tr')
        .textContent.includes('primary')""", 10)
    time.sleep(1.5)  # let the rates settle for the picture
    save_screenshot(page.screenshot(full_page=True), artifacts / "cluster-dashboard.png")

    # kill -9 the leader: the dashboard shows the new leader and the failover within seconds
    killed = time.monotonic()
    cluster.replicas["a"].signal(signal.SIGKILL)
    until(page, "document.getElementById('leader-id').textContent === 'b'", 15)
    until(page, """() => {
        const row = document.querySelector('#failovers tbody tr');
        return row && row.textContent.includes('a → b') && row.textContent.includes('expired')
            && row.cells[4].textContent.endsWith(' ms');
    }""", 15)
    shown_after = time.monotonic() - killed
    assert shown_after < 10, f"the dashboard showed the failover after {shown_after:.1f} s"
    # the dead replica's heartbeat expires: no standby left, which is a red state
    page.wait_for_selector(".alert.critical[data-code='standby_missing']", timeout=15000)
    assert "NONE" in page.inner_text("#standby-ids")
    time.sleep(1)
    save_screenshot(page.screenshot(full_page=True), artifacts / "cluster-after-failover.png")
    (artifacts / "failover.txt").write_text(
        f"dashboard showed the new leader and the failover {shown_after:.2f} s after kill -9\n"
        + page.inner_text("#failovers"))
