"""Webhooks reach only public addresses unless a webhook allows private ones: checked on the
literal in the rules file at load, and on the resolved address at every connection (a name
that resolves to loopback is refused at send time, counted, logged and dead-lettered; the
same name with ``allow_private: true`` is delivered). Real events service, real receiver."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket

import pytest
import requests
from events_support import WebhookReceiver, wait_for
from test_events_robustness import SECRET, Feed, config, deadletters, stats

from cctv.core import keys
from cctv.events.config import EventsConfigError, load_config
from cctv.events.outbound import literal_refusal, refusal

from support import Service, clip_jpegs, free_port, service_env


@pytest.mark.parametrize("address,why", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("169.254.169.254", "link_local"),
    ("fe80::1", "link_local"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("::ffff:127.0.0.1", "loopback"),
    ("100.64.0.1", "not_global"), ("fd00::1", "private"), ("8.8.8.8", None),
    ("2606:4700::1111", None),
])
def test_address_refusals(address: str, why: str | None) -> None:
    assert refusal(ipaddress.ip_address(address)) == why


def test_rules_file_with_a_private_literal_is_refused_unless_allowed(tmp_path) -> None:
    def cfg(url: str, **extra: object) -> str:
        path = tmp_path / "rules.json"
        path.write_text(json.dumps({"webhooks": [{"name": "w", "url": url, **extra}]}))
        return str(path)

    for url in ("http://127.0.0.1:9/x", "http://[::1]/x", "https://169.254.169.254/latest",
                "http://localhost:6379/", "http://10.0.0.5/hook"):
        with pytest.raises(EventsConfigError, match="allow_private"):
            load_config(cfg(url))
        assert load_config(cfg(url, allow_private=True)).webhooks[0].allow_private
    assert literal_refusal("https://hooks.example.com/x") is None  # a name: checked at send


def test_a_name_resolving_to_loopback_is_refused_at_send_time(redis_server, rdb,
                                                              tmp_path) -> None:
    name = socket.gethostname()
    resolved = {i[4][0] for i in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    assert all(refusal(ipaddress.ip_address(a)) for a in resolved), \
        f"{name} must resolve to a private address here: {resolved}"
    refused, allowed = WebhookReceiver().start(), WebhookReceiver().start()
    by_name = {"batch_s": 0.3, "max_attempts": 3, "backoff_s": 0.2, "backoff_max_s": 0.4}
    hooks = [{"name": "named", "url": refused.url.replace("127.0.0.1", name), **by_name},
             {"name": "allowed", "url": allowed.url.replace("127.0.0.1", name),
              "allow_private": True, **by_name}]
    rdb.flushall()
    port = free_port()
    (tmp_path / "events.json").write_text(json.dumps(config(hooks)))
    svc = Service(["events"], service_env(
        redis_server.url, events_config=tmp_path / "events.json", events_dir=tmp_path / "media",
        webhook_secret=SECRET, events_http_bind=f"127.0.0.1:{port}"), tmp_path, "events")
    try:
        def groups() -> int:
            with contextlib.suppress(Exception):
                return len(rdb.xinfo_groups(keys.EVENTS))
            return 0

        wait_for(lambda: groups() == 2, 30, "the receivers' groups", [svc])
        Feed(rdb).crossing(1, clip_jpegs(n=1)[0])
        wait_for(lambda: len(allowed.events()) == 1 and stats(rdb).get("deadletter:named") == 1,
                 30, "one delivery and one refusal", [svc])
        assert refused.requests == [], "nothing may reach the refused destination"
        assert stats(rdb).get("failed:named") == 1, "refused at once: no retries"
        whys = [d["why"] for d in deadletters(rdb) if d["receiver"] == "named"]
        assert whys and "loopback" in whys[0] and "allow_private" in whys[0], whys
        assert "receiver named: destination" in svc.log()
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'cctv_events_delivery_refused_total{receiver="named"} 1.0' in metrics
        assert 'cctv_events_delivery_refused_total{receiver="allowed"}' not in metrics
    finally:
        svc.stop()
        refused.stop()
        allowed.stop()
