"""The dashboard of a sharded cluster, in real headless Chromium: two replicas over four shards,
each shard's leader and cameras, the replicas' shards, and a kill -9 moving the dead replica's
shards (the history names each shard). Screenshots go to the test artifacts."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from support import until
from web_support import WebStack, login, save_screenshot, wait_for

SHARDS = 4


def _led(stack: WebStack) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in range(SHARDS):
        raw = stack.rdb.get("cctv:lease:inference" + (f":{k}" if k else ""))
        if raw:
            out[raw.decode()] = out.get(raw.decode(), 0) + 1
    return out


def test_the_dashboard_shows_each_shard_and_its_moves(browser, redis_server, tmp_path,
                                                      artifacts_dir: Path) -> None:
    redis_server.client().flushall()
    stack = WebStack(redis_server, tmp_path, replicas=())
    try:
        a = stack.replica("a", inference_shards=SHARDS)
        b = stack.replica("b", inference_shards=SHARDS)
        wait_for(lambda: _led(stack) == {"a": 2, "b": 2}, 120, "two shards each", [a, b])
        stack.send(("cam1", "cam2"), fps=6)
        wait_for(lambda: stack.results("cam1") > 3 and stack.results("cam2") > 3, 60,
                 "results of both cameras", stack.services)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        login(page, stack.url)
        page.goto(stack.url + "/cluster")
        until(page, "document.getElementById('leader-id').textContent === '4 / 4 shards led'",
              15)
        until(page, "document.querySelectorAll('#shards tbody tr').length === 4", 10)
        rows = page.inner_text("#shards")
        assert rows.count("\ta\t") == 2 and rows.count("\tb\t") == 2, rows
        # each camera is in one shard, and the table says which
        until(page, """() => ['cam1', 'cam2'].every(c =>
            [...document.querySelectorAll('#shards tbody tr')]
              .filter(r => r.cells[5].textContent.split(', ').includes(c)).length === 1)""", 10)
        replicas = page.inner_text("#replicas")
        assert "leader · shards" in replicas, replicas
        assert page.locator(".alert.critical").count() == 0, page.inner_text("#alerts")
        time.sleep(1.5)
        save_screenshot(page.screenshot(full_page=True), artifacts_dir / "cluster-shards.png")

        b.signal(signal.SIGKILL)
        until(page, """() => [...document.querySelectorAll('#shards tbody tr')]
            .every(r => r.cells[1].textContent === 'a')""", 15)
        until(page, """() => [...document.querySelectorAll('#failovers tbody tr')]
            .filter(r => r.textContent.includes('b → a') && r.textContent.includes('expired')
                    && r.cells[1].textContent.startsWith('shard ')).length === 2""", 15)
        time.sleep(1)
        save_screenshot(page.screenshot(full_page=True),
                        artifacts_dir / "cluster-shards-after-kill.png")
        assert not errors, errors
    finally:
        stack.close()
