"""MQTT delivery against a real mosquitto broker (skipped when mosquitto or paho-mqtt is not
installed): events are published per camera/rule, captions only, and a broker that comes up
late still gets everything."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from events_support import wait_for

from cctv.core import keys
from cctv.events.config import Mqtt
from cctv.events.delivery import DeliveryWorker, MqttReceiver
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
