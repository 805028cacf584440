"""MQTT delivery against a real mosquitto broker (skipped when mosquitto or paho-mqtt is not
installed): events are published per camera/rule, captions only, and a broker that comes up
late still gets everything."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from events_support import wait_for

from cctv.core import keys
from cctv.events.delivery import DeliveryWorker
from cctv.events.sinks.mqtt import Mqtt, MqttReceiver
from cctv.events.storage import EventStore

from support import free_port, wait_port

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if Path("/usr/sbin/mosquitto").exists() else None)


def _broker(port: int, tmp: Path) -> subprocess.Popen:
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    return subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _record(i: int) -> dict:
    return {"id": f"cam1-r-{1000 + i}-{i}", "camera": "cam1", "rule": "r", "type": "line",
            "status": "closed", "start_ms": 1_700_000_000_000 + i, "end_ms": None,
            "classes": ["car"], "line": "l", "caption": f"1 car crossed line 'l' ({i})",
            "box": [1, 2, 3, 4], "track": i}


def test_mqtt_delivery_captions_only_with_a_late_broker(rdb, tmp_path: Path) -> None:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    mqtt = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    port = free_port()
    store = EventStore(rdb, tmp_path / "events")
    stop = threading.Event()
    cfg = Mqtt(host="127.0.0.1", port=port, topic="site/cctv", backoff_s=0.2,
               backoff_max_s=0.5, max_attempts=100, batch_s=0.2)
    worker = DeliveryWorker(MqttReceiver(cfg), rdb, store, stop)
    worker.ensure_group()
    for i in range(3):  # emitted while the broker is down
        store.emit("instant", _record(i))
    worker.start()
    time.sleep(1.0)
    broker = _broker(port, tmp_path)
    got: list[tuple[str, dict]] = []
    sub = None
    try:
        wait_port(port, 10, broker)
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub")
        sub.on_message = lambda _c, _u, m: got.append((m.topic, json.loads(m.payload)))
        sub.connect("127.0.0.1", port)
        sub.subscribe("site/cctv/#", qos=1)
        sub.loop_start()
        time.sleep(0.5)  # subscribed before the worker's next retry (QoS 1, no retained)
        for i in range(3, 5):
            store.emit("instant", _record(i))
        wait_for(lambda: int(rdb.hget(keys.EVENTS_STATS, "delivered:mqtt") or 0) == 5, 30,
                 "five events delivered to the broker")
        wait_for(lambda: len({e["id"] for _t, e in got}) >= 2, 10, "the subscriber's messages")
    finally:
        stop.set()
        worker.thread.join(5)
        if sub is not None:
            sub.loop_stop()
        broker.terminate()
        broker.wait(5)
    assert int(rdb.hget(keys.EVENTS_STATS, "failed:mqtt") or 0) >= 1, "the broker was down"
    for topic, ev in got:
        assert topic == "site/cctv/cam1/r"
        assert set(ev) == {"type", "id", "camera", "rule", "status", "start", "end", "caption"}


def _test_ca(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a broker certificate it signed for 127.0.0.1 (openssl): (ca, cert, key)."""
    ca_key, ca, key, csr, cert = (tmp / f"{name}-{n}" for n in
                                  ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    ext = tmp / f"{name}-ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for cmd in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "2", "-subj", f"/CN={name} test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj",
         "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out",
         cert, "-days", "2", "-extfile", ext],
    ):
        subprocess.run(["openssl", *map(str, cmd)], check=True, capture_output=True)
    return ca, cert, key


def test_mqtt_over_tls_verifies_the_broker(rdb, tmp_path: Path) -> None:
    """tls: true with ca_file: delivered to a mosquitto TLS listener whose certificate the CA
    signed; a receiver trusting another CA refuses the broker (failed attempts, nothing
    delivered)."""
    if MOSQUITTO is None or shutil.which("openssl") is None:
        pytest.skip("mosquitto or openssl is not installed (apt-get install mosquitto openssl)")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    ca, cert, key = _test_ca(tmp_path, "site")
    other_ca, _c, _k = _test_ca(tmp_path, "other")
    port = free_port()
    conf = tmp_path / "tls.conf"
    # as root, mosquitto drops to its own user, who cannot read the test's private folder
    me = pwd.getpwuid(os.geteuid()).pw_name
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"user {me}\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    broker = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    stop = threading.Event()
    workers = []
    try:
        wait_port(port, 10, broker)
        store = EventStore(rdb, tmp_path / "events")
        for name, trust in (("good", ca), ("wrong", other_ca)):
            cfg = Mqtt(host="127.0.0.1", port=port, topic=f"site/{name}", tls=True,
                       ca_file=str(trust), backoff_s=0.2, backoff_max_s=0.4, max_attempts=3,
                       batch_s=0.1)
            rx = MqttReceiver(cfg)
            rx.name = f"mqtt-{name}"
            workers.append(DeliveryWorker(rx, rdb, store, stop))
        for w in workers:
            w.ensure_group()
        store.emit("instant", _record(1))
        for w in workers:
            w.start()
        wait_for(lambda: int(rdb.hget(keys.EVENTS_STATS, "delivered:mqtt-good") or 0) == 1
                 and int(rdb.hget(keys.EVENTS_STATS, "deadletter:mqtt-wrong") or 0) == 1, 30,
                 "delivery over TLS, and the untrusted broker refused")
        assert int(rdb.hget(keys.EVENTS_STATS, "failed:mqtt-wrong") or 0) == 3
        assert rdb.hget(keys.EVENTS_STATS, "delivered:mqtt-wrong") is None
    finally:
        stop.set()
        for w in workers:
            w.thread.join(5)
        broker.terminate()
        broker.wait(5)
    with pytest.raises(ValueError, match="tls"):
        Mqtt(host="h", ca_file=str(ca))
