"""The ``mqtt`` sink: an MQTT broker events are published to (optional; needs paho-mqtt)."""

from __future__ import annotations

import json
import os
import uuid
from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictStr, model_validator

from cctv.events.config import ConfigModel, Count, NonNegative, Positive, Text
from cctv.events.delivery import DeliveryError, Receiver
from cctv.events.settings import EventsSettings
from cctv.events.sinks import Route, Sink


class Mqtt(ConfigModel):
    """An MQTT broker events are published to (optional; needs paho-mqtt)."""

    host: Text
    port: Annotated[int, Field(strict=True, ge=1, le=65535)] = 1883
    topic: Annotated[str, Field(strict=True, pattern=r"^[^#+\s]+$")] = "cctv/events"
    qos: Annotated[int, Field(strict=True, ge=0, le=2)] = 1
    captions_only: StrictBool = True
    username: StrictStr = ""
    password_env: StrictStr = ""
    max_attempts: Count = 8
    backoff_s: Positive = 1.0
    backoff_max_s: Positive = 60.0
    batch_s: NonNegative = 1.0
    max_batch: Count = 100
    # MQTT over TLS (port 8883 by convention): the broker's certificate is verified against
    # ca_file (a PEM bundle), or the system's CAs when empty, and its name against host
    tls: StrictBool = False
    ca_file: StrictStr = ""

    @model_validator(mode="after")
    def _ca_needs_tls(self) -> Mqtt:
        if self.ca_file and not self.tls:
            raise ValueError("ca_file is set but tls is false: set tls: true")
        return self

    @property
    def name(self) -> str:
        """The receiver's name (its consumer group and metrics label)."""
        return "mqtt"


class MqttReceiver(Receiver):
    """Publishes each event as one JSON message to ``<topic>/<camera>/<rule>`` (QoS 1 by
    default). Needs paho-mqtt; the service only creates it when an ``mqtt`` block is
    configured."""

    def __init__(self, cfg: Mqtt) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError as exc:
            raise RuntimeError("mqtt is configured but paho-mqtt is not installed "
                               "(pip install paho-mqtt)") from exc
        self.cfg = cfg
        self.name, self.batch_s, self.max_batch = cfg.name, cfg.batch_s, cfg.max_batch
        self.max_attempts, self.backoff_s = cfg.max_attempts, cfg.backoff_s
        self.backoff_max_s, self.captions_only = cfg.backoff_max_s, cfg.captions_only
        self._mqtt = mqtt
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"cctv-events-{uuid.uuid4().hex[:8]}")
        if cfg.tls:
            try:  # certificate and host name verified (paho's defaults with tls_set)
                self.client.tls_set(ca_certs=cfg.ca_file or None)
            except (OSError, ValueError) as exc:
                raise RuntimeError(f"mqtt: ca_file {cfg.ca_file!r}: {exc}") from exc
        if cfg.username:
            self.client.username_pw_set(cfg.username, os.environ.get(cfg.password_env, "")
                                        if cfg.password_env else None)
        self._connected = False

    def _connect(self) -> None:
        if self._connected and self.client.is_connected():
            return
        try:
            self.client.connect(self.cfg.host, self.cfg.port, keepalive=30)
        except OSError as exc:  # ssl.SSLError (a certificate refused) is an OSError
            raise DeliveryError(f"mqtt connect {self.cfg.host}:{self.cfg.port}: {exc}") from None
        self.client.loop_start()
        self._connected = True

    def send(self, events: list[dict]) -> None:
        self._connect()
        infos = []
        for ev in events:
            topic = f"{self.cfg.topic}/{ev.get('camera', '-')}/{ev.get('rule', '-')}"
            info = self.client.publish(topic, json.dumps(ev, separators=(",", ":")),
                                       qos=self.cfg.qos)
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                raise DeliveryError(f"mqtt publish: {self._mqtt.error_string(info.rc)}")
            infos.append(info)
        for info in infos:
            try:
                info.wait_for_publish(timeout=5)
            except (ValueError, RuntimeError) as exc:
                raise DeliveryError(f"mqtt publish: {exc}") from None
            if not info.is_published():
                raise DeliveryError("mqtt publish: no acknowledgement within 5 s")

    def close(self) -> None:
        if self._connected:
            self.client.loop_stop()
            self.client.disconnect()


def _receivers(cfg: Mqtt | None, settings: EventsSettings, path: str) -> list[Route]:
    return [] if cfg is None else [Route(MqttReceiver(cfg))]


def _names(cfg: Any) -> list[str]:
    return [] if cfg is None else [cfg.name]


SINK = Sink("mqtt", Mqtt | None, None, names=_names, receivers=_receivers, title="MQTT",
            order=20)
